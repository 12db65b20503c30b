"""Making layers from OCI layer streams (pulls and loads): verified while they stream, recorded
by diff id, removed again (shielded) when anything fails."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ...platform.base import LayerStorage
from ..image_create import discard_layer
from .interfaces import Chunks, LayerFiles
from .layers import BlobRef, LayerIndex, LayerRecord

OnChunk = Callable[[int], Awaitable[None]]  # bytes received so far


class ContentMismatch(ValueError):
    """A blob or layer is not what its digest, size or diff id says; `str()` is for the client."""


async def verified(chunks: Chunks, digest: str, size: int, on_chunk: OnChunk | None = None) -> Chunks:
    """Pass `chunks` on, hashing them; a blob longer, shorter or other than announced raises at its end."""
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > size:
            raise ContentMismatch(f"blob {digest} is larger than announced ({size} bytes)")
        hasher.update(chunk)
        if on_chunk is not None:
            await on_chunk(received)
        yield chunk
    if received != size or hasher.hexdigest() != expected:
        raise ContentMismatch(f"digest mismatch for blob {digest}: got {algorithm}:{hasher.hexdigest()} "
                              f"({received} bytes)")


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
        layer_id, path = await self.storage.create_layer()
        self.created.append(layer_id)
        self.pin(layer_id)
        try:
            unpacked = await self.files.unpack(path, compression, chunks)
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
