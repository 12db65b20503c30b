"""What the OCI services need from the host, as small protocols (implemented in `platform`).

- `HttpTransport`: HTTP(S) requests to registries (TLS, CA, redirects, streaming bodies), and
  blocking ones for worker threads (layer downloads read and unpacked in one thread);
- `LayerFiles`: a layer's files to and from the tar streams of OCI layers, whiteouts included;
- `ArchiveFiles`: spooling received OCI/Docker archives and reading their members (load).

Failures: `TransportError` (platform.base) for the network, `ValueError` with a message for
content that is refused (a hostile or corrupt tar), `OSError` for host trouble.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from ...platform.base import Packed, Unpacked

Chunks = AsyncIterator[bytes]


class HttpReply(Protocol):
    status: int
    url: str  # after redirects

    def header(self, name: str) -> str | None: ...
    async def read(self, limit: int) -> bytes:
        """The whole body; more than `limit` bytes is a `ValueError`."""
        ...

    def chunks(self) -> Chunks:
        """The body in chunks of about 1 MiB."""
        ...


class BlockingReply(Protocol):
    """A reply read by a worker thread."""

    status: int
    url: str

    def header(self, name: str) -> str | None: ...
    def read(self) -> bytes:
        """The next piece of the body (up to about 1 MiB); b"" at its end. Blocks."""
        ...

    def abort(self) -> None:
        """From any thread: make a read that waits, and every later one, fail with `TransportError`."""
        ...


class HttpTransport(Protocol):
    def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | AsyncIterable[bytes] | None = None,
        follow_redirects: bool = False,
    ) -> contextlib.AbstractAsyncContextManager[HttpReply]:
        """Send one request; the reply's body is read inside the block."""
        ...

    def blocking(self, method: str, url: str, *, headers: dict[str, str],
                 follow_redirects: bool = False) -> contextlib.AbstractContextManager[BlockingReply]:
        """`request` without a body, from a worker thread: blocks; the body is read inside the block."""
        ...


class LayerFiles(Protocol):
    version: str  # changes when `pack` would produce other bytes: kept digests name it

    async def unpack(self, dest: Path, compression: str, chunks: Chunks) -> Unpacked:
        """Extract a layer's tar stream (`compression`: "", "gzip" or "zstd") into the empty layer
        directory `dest`, OCI whiteouts turned into the storage's form. Reads `chunks` to the end."""
        ...

    def unpack_blocking(self, dest: Path, compression: str, source: io.RawIOBase) -> Unpacked:
        """`unpack` in the calling worker thread, from a blocking `source`; reads it to its end."""
        ...

    async def measure(self, source: Path, compression: str) -> Packed:
        """Digest and size of what `pack(source, compression)` produces (it is deterministic)."""
        ...

    def pack(self, source: Path, compression: str) -> contextlib.AbstractAsyncContextManager[Chunks]:
        """The layer directory `source` as an OCI layer tar stream (whiteouts in OCI form),
        produced while the block reads it."""
        ...


class SpooledArchive(Protocol):
    """A received archive's members (regular files; member symlinks are followed)."""

    def names(self) -> list[str]: ...
    async def read(self, name: str, limit: int) -> bytes: ...
    def open(self, name: str) -> Chunks: ...
    def size(self, name: str) -> int: ...


class ArchiveFiles(Protocol):
    def spooled(self, chunks: Chunks) -> contextlib.AbstractAsyncContextManager[SpooledArchive]:
        """The archive `chunks` carry (a tar, or a gzip of one), kept in a private file while the block runs.

        Raises `ValueError` with a message for what is not a readable tar."""
        ...


Progress = Callable[[str, str, int, int], Awaitable[None]]  # layer, status, current, total
