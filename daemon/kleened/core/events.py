"""The event bus: one `Event` per state change, to live subscribers and a bounded history.

Services call `publish` *after* the change is committed (the store write done, the process
started or reaped), so a subscriber never hears of a change that then fails. `publish` is
synchronous and never blocks: every subscriber has a bounded queue, and one whose queue is
full is dropped (its stream ends with `dropped` set) instead of slowing the publisher.

`subscribe(since=...)` replays the retained history and registers the live queue in one step,
with no await in between, so a subscriber sees every event exactly once, in order.

Vocabulary of events (type: actions, attributes):
- container: create (name, image), start (name), oom (name), die (name, exit_code), stop (name),
  restart (name, restart_count: an automatic restart by its policy), health_status (name, health_status),
  rename (name, old_name), remove (name), attach (name), detach (name, reason)
- exec: start (container), die (container, exit_code)
- image: create (name), build (name), tag (name), remove (name)
- network: create (name, type), connect (name, container), disconnect (name, container),
  remove (name)
- volume: create (name), remove (name)
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import trio

from kleene_protocol.models import Event, EventType

from .errors import InvalidArgument
from .stamps import stamp_text

FILTER_KEYS = ("type", "event", "object")


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber wants: every key given must match one of its values."""

    types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    objects: frozenset[str] = frozenset()
    since_ns: int | None = None
    until_ns: int | None = None

    @classmethod
    def parse(cls, filters: Mapping[str, Iterable[str]], *, since_ns: int | None = None,
              until_ns: int | None = None) -> EventFilter:
        unknown = sorted(set(filters) - set(FILTER_KEYS))
        if unknown:
            raise InvalidArgument(f"invalid filter '{unknown[0]}': use {', '.join(FILTER_KEYS)}")
        return cls(types=frozenset(filters.get("type", ())), actions=frozenset(filters.get("event", ())),
                   objects=frozenset(filters.get("object", ())), since_ns=since_ns, until_ns=until_ns)

    def matches(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        if self.actions and event.action not in self.actions:
            return False
        if self.objects and not (event.id in self.objects or event.attributes.get("name") in self.objects
                                 or event.attributes.get("container") in self.objects):
            return False
        return self.until_ns is None or event.time_nano <= self.until_ns


@dataclass(eq=False)
class Subscription:
    """A subscriber's bounded queue. `receive()` returns None at the end; then `dropped` says
    whether the end came because the subscriber fell `limit` events behind."""

    filter: EventFilter
    limit: int
    _queue: collections.deque[Event] = field(default_factory=collections.deque)
    _lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    closed: bool = False
    dropped: bool = False

    def offer(self, event: Event) -> None:
        if self.closed or not self.filter.matches(event):
            return
        if len(self._queue) >= self.limit:
            self.dropped = True
            self._queue.clear()  # a dropped reader gets nothing more: free the memory now
            self.close()
            return
        self._queue.append(event)
        self._lot.unpark_all()

    async def receive(self) -> Event | None:
        """The next event; None once closed (or, with `until`, once that time has passed)."""
        while not self._queue:
            if self.closed:
                return None
            if self.filter.until_ns is None:
                await self._lot.park()
                continue
            with trio.move_on_after(max(0.0, (self.filter.until_ns - time.time_ns()) / 1e9)) as scope:
                await self._lot.park()
            if scope.cancelled_caught:
                self.close()
        return self._queue.popleft()

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()


class Events:
    """The daemon's event bus. `history` events are kept for `since`; `buffer` per subscriber."""

    def __init__(self, *, history: int = 1000, buffer: int = 256) -> None:
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        self._buffer = buffer
        self._subscribers: list[Subscription] = []
        self._seq = 0
        self.dropped_subscribers = 0

    def publish(self, type_: EventType, action: str, object_id: str, **attributes: str | int | None) -> Event:
        """Record and deliver one event; attributes that are None are left out."""
        self._seq += 1
        now = time.time_ns()
        event = Event(seq=self._seq, time=stamp_text(now), time_nano=now, type=type_, action=action, id=object_id,
                      attributes={k: str(v) for k, v in attributes.items() if v is not None})
        self._history.append(event)
        for sub in list(self._subscribers):
            sub.offer(event)
            if sub.closed:
                self._subscribers.remove(sub)
                self.dropped_subscribers += sub.dropped
        return event

    def subscribe(self, event_filter: EventFilter) -> Subscription:
        """Replay the history since `event_filter.since_ns` (if set), then live events.

        With `until_ns` in the past the subscription holds the replay only and is closed.
        """
        sub = Subscription(event_filter, max(self._buffer, len(self._history)))
        if event_filter.since_ns is not None:
            for event in self._history:
                if event.time_nano >= event_filter.since_ns:
                    sub.offer(event)
        sub.limit = self._buffer
        if event_filter.until_ns is not None and event_filter.until_ns <= time.time_ns():
            sub.close()
        else:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def statistics(self) -> dict[str, int]:
        return {"published": self._seq, "subscribers": len(self._subscribers), "retained": len(self._history),
                "dropped_subscribers": self.dropped_subscribers}
