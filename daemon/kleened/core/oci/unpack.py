"""Making layers from OCI layer streams (pulls and loads): verified while they stream, recorded
by diff id, removed again (shielded) when anything fails.

A stream is verified either as async chunks (`verified`: loads) or, in the worker thread that
unpacks a downloaded layer, as a blocking stream (`VerifiedReader`); both check the same way.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ...platform.base import LayerStorage, Unpacked
from ..image_create import discard_layer
from .interfaces import Chunks, LayerFiles
from .layers import BlobRef, LayerIndex, LayerRecord

OnChunk = Callable[[int], Awaitable[None]]  # bytes received so far


class ContentMismatch(ValueError):
    """A blob or layer is not what its digest, size or diff id says; `str()` is for the client."""


class _Verifier:
    """The digest and size of a blob, checked piece by piece: too long raises at once, other
    than announced at the end."""

    def __init__(self, digest: str, size: int) -> None:
        self.digest, self.size = digest, size
        self.algorithm, _, self.expected = digest.partition(":")
        self.hasher = hashlib.new(self.algorithm)
        self.received = 0

    def update(self, piece: bytes) -> None:
        self.received += len(piece)
        if self.received > self.size:
            raise ContentMismatch(f"blob {self.digest} is larger than announced ({self.size} bytes)")
        self.hasher.update(piece)

    def finish(self) -> None:
        if self.received != self.size or self.hasher.hexdigest() != self.expected:
            raise ContentMismatch(f"digest mismatch for blob {self.digest}: got {self.algorithm}:"
                                  f"{self.hasher.hexdigest()} ({self.received} bytes)")


async def verified(chunks: Chunks, digest: str, size: int, on_chunk: OnChunk | None = None) -> Chunks:
    """Pass `chunks` on, hashing them; a blob longer, shorter or other than announced raises."""
    check = _Verifier(digest, size)
    async for chunk in chunks:
        check.update(chunk)
        if on_chunk is not None:
            await on_chunk(check.received)
        yield chunk
    check.finish()


class VerifiedReader(io.RawIOBase):
    """A blocking blob stream made of the pieces `read_piece()` returns (b"" at the end),
    verified as `verified` does; `on_bytes(received)` after each piece. For a worker thread."""

    def __init__(self, read_piece: Callable[[], bytes], digest: str, size: int,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self._read_piece = read_piece
        self._check = _Verifier(digest, size)
        self._on_bytes = on_bytes
        self._piece = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._piece and not self._eof:
            piece = self._read_piece()
            if not piece:
                self._eof = True
                self._check.finish()
                return
            self._check.update(piece)
            if self._on_bytes is not None:
                self._on_bytes(self._check.received)
            self._piece = memoryview(piece)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        self._fill()
        n = min(size, len(self._piece))
        out, self._piece = self._piece[:n], self._piece[n:]
        return out.tobytes() if n < len(out.obj) else bytes(out.obj)  # a whole piece: no copy

    def readinto(self, buffer: Any) -> int:
        self._fill()
        n = min(len(buffer), len(self._piece))
        buffer[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n


@dataclass
class LayerMaker:
    """Makes layers for one operation and remembers them, so that a failure can remove them all."""

    storage: LayerStorage
    files: LayerFiles
    index: LayerIndex
    pin: Callable[[str], None]
    created: list[str] = field(default_factory=list)

    async def make(self, compression: str, chunks: Chunks, diff_id: str, blob: BlobRef | None = None) -> str:
        """A new layer holding the tar stream `chunks`; its diff id must be `diff_id`."""
        return await self.make_with(lambda path: self.files.unpack(path, compression, chunks), diff_id, blob)

    async def make_with(self, unpack: Callable[[Path], Awaitable[Unpacked]], diff_id: str,
                        blob: BlobRef | None = None) -> str:
        """A new layer that `unpack(its directory)` fills; its diff id must be `diff_id`."""
        layer_id, path = await self.storage.create_layer()
        self.created.append(layer_id)
        self.pin(layer_id)
        try:
            unpacked = await unpack(path)
            if unpacked.diff_id != diff_id:
                raise ContentMismatch(f"layer {blob.digest if blob else layer_id} does not match its diff id: "
                                      f"expected {diff_id}, got {unpacked.diff_id}")
        except BaseException:
            await self.discard(layer_id)
            raise
        self.index.put(LayerRecord(id=layer_id, diff_id=diff_id, blob=blob))
        return layer_id

    async def discard(self, layer_id: str) -> None:
        with trio.CancelScope(shield=True):
            await discard_layer(self.storage, layer_id)
        self.created.remove(layer_id)

    async def discard_all(self) -> None:
        for layer_id in list(self.created):
            await self.discard(layer_id)
