"""Distributing one process's output to its readers.

A *lossless* subscriber (the exec session that started the process) gets every chunk; when it
falls behind, the pump waits, and so the process blocks on a full pipe, as with any pipe. A
*lossy* subscriber (an attached client) never slows the process: its buffer is bounded in
bytes, and when a chunk does not fit the subscriber is dropped (its buffer freed, its stream
ended with `dropped` set) so that its reader can say why.

`publish` takes its list of subscribers before its first await: a subscriber added while it
waits on a lossless reader starts with the next chunk, never in the middle of one.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field

import trio


class Stream(enum.IntEnum):
    STDOUT = 1
    STDERR = 2


Chunk = tuple[Stream, bytes]


@dataclass(eq=False)
class Subscription:
    """A lossy reader's buffer: at most `limit` bytes wait in it."""

    limit: int
    _chunks: collections.deque[Chunk] = field(default_factory=collections.deque)
    _bytes: int = 0
    _lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    closed: bool = False
    dropped: bool = False

    def offer(self, chunk: Chunk) -> bool:
        """Queue `chunk`; False (and the subscriber dropped) when it does not fit."""
        if self.closed:
            return False
        if self._bytes + len(chunk[1]) > self.limit:
            self.dropped = True
            self._chunks.clear()
            self._bytes = 0
            self.close()
            return False
        self._chunks.append(chunk)
        self._bytes += len(chunk[1])
        self._lot.unpark_all()
        return True

    async def receive(self) -> Chunk | None:
        """The next chunk, or None at the end (see `dropped` for why it ended)."""
        while not self._chunks:
            if self.closed:
                return None
            await self._lot.park()
        chunk = self._chunks.popleft()
        self._bytes -= len(chunk[1])
        return chunk

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()


@dataclass(eq=False)
class Fanout:
    buffer: int = 64  # chunks per lossless subscriber (a chunk is at most 64 KiB)
    _lossless: list[trio.MemorySendChannel[Chunk]] = field(default_factory=list)
    _lossy: list[Subscription] = field(default_factory=list)
    closed: bool = False
    dropped: int = 0  # lossy subscribers dropped so far

    def subscribe(self, *, lossless: bool = True) -> trio.MemoryReceiveChannel[Chunk]:
        """A lossless subscriber's channel (`lossless=False` is `subscribe_lossy`'s job)."""
        if not lossless:
            raise ValueError("lossy subscribers use subscribe_lossy()")
        send, receive = trio.open_memory_channel[Chunk](self.buffer)
        if self.closed:
            send.close()
        else:
            self._lossless.append(send)
        return receive

    def subscribe_lossy(self, limit: int) -> Subscription:
        sub = Subscription(limit)
        if self.closed:
            sub.close()
        else:
            self._lossy.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        if sub in self._lossy:
            self._lossy.remove(sub)

    async def publish(self, stream: Stream, data: bytes) -> None:
        chunk = (stream, data)
        lossless = list(self._lossless)
        for sub in list(self._lossy):
            if not sub.offer(chunk):
                self._lossy.remove(sub)
                self.dropped += sub.dropped
        for channel in lossless:
            try:
                await channel.send(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if channel in self._lossless:
                    self._lossless.remove(channel)
                channel.close()

    def close(self) -> None:
        """End of output: every subscriber's stream ends."""
        self.closed = True
        for channel in self._lossless:
            channel.close()
        for sub in self._lossy:
            sub.close()
        self._lossless.clear()
        self._lossy.clear()
