"""Pushing an image: its layers (skipped when the registry has them, mounted from the repository
they were pulled from when it is on the same registry, else uploaded from our own tar), then its
config, then the manifest under the tag. At most `concurrency` layers move at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from ..records import ImageRecord
from .export import LayerBlob, config_blob, manifest_blob, own_blob
from .interfaces import Chunks, LayerFiles, Progress
from .layers import LayerIndex
from .manifest import OCI_MANIFEST, Descriptor
from .reference import Reference
from .registry import RegistryClient, sha256


@dataclass
class PushJob:
    client: RegistryClient
    reference: Reference
    image: ImageRecord
    index: LayerIndex
    files: LayerFiles
    layer_path: Callable[[str], Path]
    progress: Progress
    concurrency: int = 3


async def push(job: PushJob) -> str:
    """Push `job.image` to `job.reference`; return the manifest's digest."""
    blobs = await _push_layers(job)
    repository = job.reference.repository
    config = config_blob(job.image, blobs)
    config_digest = sha256(config)
    if not await job.client.has_blob(repository, config_digest):
        await job.client.upload_blob(repository, config_digest, lambda: _once(config))
    manifest = manifest_blob(config, config_digest, blobs)
    digest = sha256(manifest)
    await job.client.put_manifest(repository, job.reference.tag or digest, manifest, OCI_MANIFEST)
    return digest


async def _push_layers(job: PushJob) -> list[LayerBlob]:
    limiter = trio.CapacityLimiter(max(1, job.concurrency))
    results: list[LayerBlob | None] = [None] * len(job.image.layers)
    errors: list[Exception] = []

    async def one(i: int, nursery: trio.Nursery) -> None:
        try:
            async with limiter:
                results[i] = await _push_layer(job, job.image.layers[i])
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i in range(len(results)):
            nursery.start_soon(one, i, nursery)
    if errors:
        raise errors[0]
    return [blob for blob in results if blob is not None]


async def _push_layer(job: PushJob, layer_id: str) -> LayerBlob:
    client, ref = job.client, job.reference
    record = job.index.get(layer_id)
    if record is not None and record.blob is not None:
        b = record.blob
        original = LayerBlob(layer_id, Descriptor(mediaType=b.media_type, digest=b.digest, size=b.size),
                             record.diff_id, own=False)
        if await client.has_blob(ref.repository, b.digest):
            await job.progress(layer_id, "Layer already exists", b.size, b.size)
            return original
        if b.registry == ref.registry and b.repository != ref.repository \
                and await client.mount_blob(ref.repository, b.digest, b.repository):
            await job.progress(layer_id, "Mounted", b.size, b.size)
            return original
    await job.progress(layer_id, "Preparing", 0, 0)
    own = await own_blob(job.index, job.files, job.layer_path, layer_id, "gzip")
    size = own.descriptor.size
    if await client.has_blob(ref.repository, own.descriptor.digest):
        await job.progress(layer_id, "Layer already exists", size, size)
        return own
    async with job.files.pack(job.layer_path(layer_id), "gzip") as chunks:
        await client.upload_blob(ref.repository, own.descriptor.digest, lambda: _counted(chunks, job, layer_id, size))
    await job.progress(layer_id, "Pushed", size, size)
    return own


async def _counted(chunks: Chunks, job: PushJob, layer_id: str, total: int) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        await job.progress(layer_id, "Pushing", sent, total)
        yield chunk


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
