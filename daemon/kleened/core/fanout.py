"""Distributing one process's output to its readers.

A *lossless* subscriber (the exec session that started the process) gets every chunk; when it
falls behind, the pump waits, and so the process blocks on a full pipe, as with any pipe. A
*lossy* subscriber (a later attach or a log follower) never slows the process: when its bounded
buffer is full it is dropped and told why.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import trio


class Stream(enum.IntEnum):
    STDOUT = 1
    STDERR = 2


Chunk = tuple[Stream, bytes]


@dataclass(eq=False)
class Subscriber:
    channel: trio.MemorySendChannel[Chunk]
    lossless: bool
    dropped: bool = False


@dataclass(eq=False)
class Fanout:
    buffer: int = 64  # chunks per subscriber (a chunk is at most 64 KiB)
    _subscribers: list[Subscriber] = field(default_factory=list)
    closed: bool = False

    def subscribe(self, *, lossless: bool) -> trio.MemoryReceiveChannel[Chunk]:
        send, receive = trio.open_memory_channel[Chunk](self.buffer)
        if self.closed:
            send.close()
        else:
            self._subscribers.append(Subscriber(send, lossless))
        return receive

    async def publish(self, stream: Stream, data: bytes) -> None:
        for sub in list(self._subscribers):
            try:
                if sub.lossless:
                    await sub.channel.send((stream, data))
                else:
                    sub.channel.send_nowait((stream, data))
            except trio.WouldBlock:
                sub.dropped = True
                self._remove(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._remove(sub)

    def _remove(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        sub.channel.close()

    def close(self) -> None:
        """End of output: every subscriber's channel ends."""
        self.closed = True
        for sub in list(self._subscribers):
            self._remove(sub)
