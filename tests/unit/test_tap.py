"""The tap: one attach connection read by a pump per stream (platform/linux/monitored.py)."""

from __future__ import annotations

import random

import trio

from kleened.platform.linux.attachsock import STDERR, STDOUT
from kleened.platform.linux.monitored import _Tap


class FakeConnection:
    """Packets as conmon sends them, with a checkpoint (another task may run) before each."""

    def __init__(self, packets: list[tuple[int, bytes]], seed: int) -> None:
        self._packets = list(packets)
        self._rng = random.Random(seed)
        self.closed = False

    async def receive(self) -> tuple[int, bytes] | None:
        for _ in range(self._rng.randrange(3)):
            await trio.lowlevel.checkpoint()
        return self._packets.pop(0) if self._packets else None

    def close(self) -> None:
        self.closed = True


def test_each_pump_gets_its_stream_in_order_and_both_see_the_end():
    packets = [(random.Random(i).choice([STDOUT, STDERR]), b"%d," % i) for i in range(300)]

    async def main(seed: int) -> dict[int, bytes]:
        tap = _Tap(FakeConnection(packets, seed))  # type: ignore[arg-type]
        got = {STDOUT: b"", STDERR: b""}

        async def pump(stream: int) -> None:
            while data := await tap.receive(stream):
                got[stream] += data
                if random.Random(seed + len(got[stream])).random() < 0.3:
                    await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, STDOUT)
            nursery.start_soon(pump, STDERR)
        return got

    for seed in range(20):
        got = trio.run(main, seed)
        for stream in (STDOUT, STDERR):
            assert got[stream] == b"".join(data for s, data in packets if s == stream), seed


def test_a_tap_without_connection_has_ended():
    async def main() -> bytes:
        return await _Tap(None).receive(STDOUT)

    assert trio.run(main) == b""
