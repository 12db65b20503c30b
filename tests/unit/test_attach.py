"""Attach pieces without a container: detach keys and the lossy fan-out."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from kleened.core.attach import DetachFilter, parse_detach_keys
from kleened.core.errors import InvalidArgument
from kleened.core.fanout import Fanout, Stream


@pytest.mark.parametrize(("spec", "keys"), [
    ("ctrl-p,ctrl-q", b"\x10\x11"), ("ctrl-a", b"\x01"), ("ctrl-@,ctrl-[,ctrl-\\", b"\x00\x1b\x1c"),
    ("a,b", b"ab"), ("ctrl-Z", b"\x1a"),
])
def test_detach_keys(spec, keys):
    assert parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["", "ctrl-", "ctrl-pq", "ab", "é", "ctrl-1"])
def test_bad_detach_keys(spec):
    with pytest.raises(InvalidArgument, match="invalid detach keys"):
        parse_detach_keys(spec)


def test_detach_filter_holds_a_started_sequence_and_lets_a_broken_one_through():
    f = DetachFilter(b"\x10\x11")
    assert f.feed(b"abc") == (b"abc", False)
    assert f.feed(b"x\x10") == (b"x", False)  # held: it may be the start of the sequence
    assert f.feed(b"y") == (b"\x10y", False)  # it was not
    assert f.feed(b"\x10\x10") == (b"\x10", False)  # the second one may start it again
    assert f.feed(b"\x11rest") == (b"", True)
    assert DetachFilter(b"").feed(b"\x10\x11") == (b"\x10\x11", False)


@given(st.lists(st.binary(max_size=20), max_size=20))
def test_detach_filter_forwards_everything_before_the_sequence(frames):
    keys = b"\x10\x11"
    f = DetachFilter(keys)
    forwarded, detached = b"", False
    for frame in frames:
        out, detached = f.feed(frame)
        forwarded += out
        if detached:
            break
    whole = b"".join(frames)
    if detached:
        assert forwarded == whole[: whole.index(keys)]
    else:
        assert keys not in whole and whole.startswith(forwarded) and len(whole) - len(forwarded) <= 1


def test_a_lossy_subscriber_is_dropped_the_lossless_one_gets_everything():
    async def main() -> None:
        fanout = Fanout()
        lossless = fanout.subscribe(lossless=True)
        slow = fanout.subscribe_lossy(limit=1000)
        fast = fanout.subscribe_lossy(limit=1000)
        got = []
        for i in range(100):
            await fanout.publish(Stream.STDOUT, b"%03d" % i + b"x" * 97)
            got.append(await lossless.receive())
            assert await fast.receive() is not None
        assert len(got) == 100 and slow.dropped and slow.closed and not fast.dropped
        assert await slow.receive() is None  # its buffer was freed when it was dropped
        fanout.close()
        assert await fast.receive() is None and not fast.dropped
        assert fanout.dropped == 1

    trio.run(main)
