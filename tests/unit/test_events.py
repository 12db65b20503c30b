"""The event bus: order, filters, `since` replay, bounded history, slow subscribers dropped."""

from __future__ import annotations

import time

import pytest
import trio

from kleene_protocol.codec import encode
from kleene_protocol.models import Event
from kleened.core.errors import InvalidArgument
from kleened.core.events import EventFilter, Events


def drain(sub) -> list[Event]:
    async def main() -> list[Event]:
        got = []
        while sub._queue or not sub.closed:
            with trio.move_on_after(0.05):
                event = await sub.receive()
                if event is None:
                    break
                got.append(event)
                continue
            break
        return got

    return trio.run(main)


def test_events_arrive_in_order_with_their_attributes():
    bus = Events()
    sub = bus.subscribe(EventFilter())
    bus.publish("container", "create", "c1", name="web", image="i1")
    bus.publish("container", "die", "c1", name="web", exit_code=3)
    bus.publish("volume", "create", "v", name="v", missing=None)
    got = drain(sub)
    assert [(e.type, e.action, e.id) for e in got] == [("container", "create", "c1"), ("container", "die", "c1"),
                                                        ("volume", "create", "v")]
    assert got[1].attributes == {"name": "web", "exit_code": "3"} and got[2].attributes == {"name": "v"}
    assert [e.seq for e in got] == [1, 2, 3] and got[0].time_nano <= got[2].time_nano
    assert len(got[0].time) == 30 and got[0].time.endswith("Z")
    assert b'"action":"create"' in encode(got[0])


def test_filters_by_type_event_and_object():
    bus = Events()
    by_type = bus.subscribe(EventFilter.parse({"type": ["exec"]}))
    by_action = bus.subscribe(EventFilter.parse({"event": ["start", "die"], "type": ["container"]}))
    by_object = bus.subscribe(EventFilter.parse({"object": ["web"]}))
    bus.publish("container", "create", "c1", name="web")
    bus.publish("container", "start", "c1", name="web")
    bus.publish("exec", "start", "e1", container="c1")
    bus.publish("container", "start", "c2", name="db")
    assert [e.id for e in drain(by_type)] == ["e1"]
    assert [(e.action, e.id) for e in drain(by_action)] == [("start", "c1"), ("start", "c2")]
    assert [e.action for e in drain(by_object)] == ["create", "start"]
    by_container = bus.subscribe(EventFilter.parse({"object": ["c1"]}, since_ns=0))
    assert [e.type for e in drain(by_container)] == ["container", "container", "exec"]  # exec's container attribute
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        EventFilter.parse({"colour": ["red"]})


def test_since_replays_the_bounded_history_then_live_without_duplicates():
    bus = Events(history=5)
    for i in range(8):
        bus.publish("volume", "create", f"v{i}")
    middle = bus.publish("volume", "create", "v8").time_nano
    bus.publish("volume", "create", "v9")
    sub = bus.subscribe(EventFilter(since_ns=middle))
    bus.publish("volume", "remove", "v9")
    assert [(e.action, e.id) for e in drain(sub)] == [("create", "v8"), ("create", "v9"), ("remove", "v9")]
    everything = bus.subscribe(EventFilter(since_ns=0))
    assert [e.id for e in drain(everything)][:5] == ["v6", "v7", "v8", "v9", "v9"]  # only 5 retained
    assert bus.statistics()["retained"] == 5


def test_until_in_the_past_replays_and_ends():
    bus = Events()
    bus.publish("image", "tag", "i1")
    sub = bus.subscribe(EventFilter(since_ns=0, until_ns=time.time_ns()))
    bus.publish("image", "remove", "i1")
    assert [e.action for e in drain(sub)] == ["tag"] and sub.closed and not sub.dropped


def test_a_stalled_subscriber_is_dropped_and_never_blocks_the_publisher_or_others():
    bus = Events(buffer=10)
    stalled = bus.subscribe(EventFilter())
    reader = bus.subscribe(EventFilter())

    async def main() -> int:
        received = 0
        for i in range(1000):
            bus.publish("container", "start", f"c{i}")  # synchronous: it cannot block
            event = await reader.receive()
            received += event is not None
        return received

    assert trio.run(main) == 1000
    assert stalled.dropped and stalled.closed and not stalled._queue
    assert not reader.dropped
    assert bus.statistics()["dropped_subscribers"] == 1 and bus.statistics()["subscribers"] == 1
