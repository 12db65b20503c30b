"""Byte streams between trio and a worker thread, so blocking tar and compression code can
consume an async stream of chunks, or produce one, without holding either in memory.

- `ChunkReader`: a file-like object *in the thread* that reads an async chunk iterator (each
  chunk fetched with `trio.from_thread.run`, so a cancelled trio task ends the thread's read
  with `trio.Cancelled`, and an error raised by the iterator surfaces in the thread);
- `produced(job)`: an async context manager giving the chunks `job(write)` writes in a thread;
  at most one chunk waits at a time, so a slow reader slows the thread down.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

CHUNK = 1 << 20


class ChunkReader(io.RawIOBase):
    """Read the async iterator `chunks` from a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._view = memoryview(b"")
        self._eof = False

    async def _next(self) -> bytes:
        return await self._chunks.__anext__()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._view and not self._eof:
            try:
                self._view = memoryview(trio.from_thread.run(self._next))
            except StopAsyncIteration:
                self._eof = True
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


class _ChunkWriter(io.RawIOBase):
    """A write-only file in the thread that hands `CHUNK`-sized pieces to trio."""

    def __init__(self, send: trio.MemorySendChannel[bytes]) -> None:
        self._send = send
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        if len(self._pending) >= CHUNK:
            self.flush_chunks()
        return len(data)

    def flush_chunks(self) -> None:
        if self._pending:
            chunk, self._pending = bytes(self._pending), bytearray()
            trio.from_thread.run(self._send.send, chunk)


Fill = Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]]


@contextlib.asynccontextmanager
async def _fed(fill: Fill, depth: int) -> AsyncIterator[AsyncIterator[bytes]]:
    """The chunks `fill(send)` sends from a task of its own, at most `depth` waiting; an error
    of `fill` is raised from the iterator after the chunks sent before it. Leaving the block
    early cancels `fill`."""
    send, receive = trio.open_memory_channel[bytes](depth)
    failure: list[BaseException] = []

    async def feed() -> None:
        async with send:
            try:
                await fill(send)
            except Exception as exc:
                failure.append(exc)

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in receive:
            yield chunk
        if failure:
            raise failure[0]

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            try:
                yield chunks()
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # `feed` never raises, so the group holds what the block raised: raise it as it was, so that
        # callers catch their own errors and not a group (trio groups whatever leaves a nursery).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def produced(job: Callable[[io.RawIOBase], None]) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
    """The bytes `job(out)` writes to `out` in a worker thread, as an async iterator.

    Leaving the block early stops the thread (its next write raises `trio.Cancelled`); an
    error of the job is raised from the iterator.
    """

    def run(send: trio.MemorySendChannel[bytes]) -> None:
        out = _ChunkWriter(send)
        job(out)
        out.flush_chunks()

    async def fill(send: trio.MemorySendChannel[bytes]) -> None:
        await trio.to_thread.run_sync(run, send)

    return _fed(fill, 1)


def prefetched(chunks: AsyncIterator[bytes], depth: int = 8) -> contextlib.AbstractAsyncContextManager[
        AsyncIterator[bytes]]:
    """`chunks`, read ahead by a task of its own (at most `depth` chunks waiting).

    A worker thread that reads chunk by chunk through `ChunkReader` would otherwise leave the
    network idle while it works on a chunk, and itself idle while the next one arrives. An
    error of `chunks` is raised from the returned iterator once the chunks before it are read.
    """

    async def fill(send: trio.MemorySendChannel[bytes]) -> None:
        async for chunk in chunks:
            await send.send(chunk)

    return _fed(fill, depth)
