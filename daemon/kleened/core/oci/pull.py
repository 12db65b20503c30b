"""Pulling an image: manifest (an index's entry for the platform), config, then the layers.

Flow: the manifest (by tag or digest; an index is resolved to the platform's entry), the config
blob, then every layer the store does not hold yet (by diff id) is downloaded, at most
`concurrency` at a time, each straight into a fresh layer directory: the blob is hashed while
it streams and unpacked as it arrives, and its digest, size and diff id must all match or the
layer is removed. A transfer that breaks is started again from the beginning (a new layer),
up to `retries` times.

Nothing is left behind: a failed or cancelled pull removes, shielded, every layer it made
(kept ones included) before the error propagates; a pull killed with the daemon leaves layers
no image stacks, which the start-up garbage collection removes (`Images.collect_garbage`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ...platform.base import LayerStorage, TransportError
from ..image_create import discard_layer
from .interfaces import Chunks, LayerFiles, Progress
from .layers import BlobRef, LayerIndex, LayerRecord
from .manifest import (
    COMPRESSION,
    INDEXES,
    MAX_CONFIG,
    Descriptor,
    Document,
    ImageConfig,
    ManifestError,
    Platform,
    decode_config,
    decode_document,
    select,
)
from .reference import Reference
from .registry import RegistryClient, RegistryError

log = logging.getLogger(__name__)


@dataclass
class Pulled:
    """What a pull brought: the config, the layer stack (bottom first), the digests."""

    config: ImageConfig
    layers: list[str]
    digest: str  # of the top-level document (the index when there is one): what `@digest` names
    config_digest: str
    downloaded: int = 0  # bytes moved over the network for layers


@dataclass
class PullJob:
    client: RegistryClient
    reference: Reference
    storage: LayerStorage
    files: LayerFiles
    index: LayerIndex
    pin: Callable[[str], None]
    progress: Progress
    concurrency: int = 3
    retries: int = 3
    created: list[str] = field(default_factory=list)  # layers made by this pull, for the cleanup


async def resolve(client: RegistryClient, ref: Reference, wanted: Platform) -> tuple[Document, str, str]:
    """The image manifest for `wanted`, the digest of the top-level document, and the manifest's."""
    data, media_type, digest = await client.manifest(ref.repository, ref.target)
    doc, chosen = decode_document(data, media_type), digest
    if doc.mediaType in INDEXES:
        entry = select(doc, wanted)
        data, media_type, chosen = await client.manifest(ref.repository, entry.digest)
        doc = decode_document(data, media_type or entry.mediaType)
        if doc.mediaType in INDEXES:
            raise ManifestError("nested indexes are not supported")
    return doc, digest, chosen


async def pull(job: PullJob, manifest: Document, digest: str) -> Pulled:
    """Pull `manifest`'s config and layers (`resolve` found both); on any failure or cancellation
    remove every layer it made, then re-raise."""
    try:
        return await _pull(job, manifest, digest)
    except BaseException:
        with trio.CancelScope(shield=True):
            for layer_id in job.created:
                await discard_layer(job.storage, layer_id)
        raise


async def _pull(job: PullJob, manifest: Document, digest: str) -> Pulled:
    assert manifest.config is not None and manifest.layers is not None
    data = await job.client.read_blob(job.reference.repository, manifest.config.digest, MAX_CONFIG)
    config = decode_config(data)
    diff_ids = config.rootfs.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise ManifestError(f"the manifest lists {len(manifest.layers)} layers, its config {len(diff_ids)}")
    stack: list[str | None] = []
    for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
        if desc.mediaType not in COMPRESSION and desc.mediaType:
            raise ManifestError(f"unsupported layer type '{desc.mediaType}'")
        found = job.index.find(diff_id, exclude=[s for s in stack if s])
        if found is not None:
            job.pin(found)
        stack.append(found)
    for desc, found in zip(manifest.layers, stack, strict=True):
        await job.progress(short(desc.digest), "Already exists" if found else "Waiting", 0, desc.size)
    downloaded = await _download_missing(job, manifest.layers, diff_ids, stack)
    layers = [layer for layer in stack if layer is not None]
    assert len(layers) == len(stack)
    return Pulled(config=config, layers=layers, digest=digest, config_digest=manifest.config.digest,
                  downloaded=downloaded)


async def _download_missing(job: PullJob, descs: list[Descriptor], diff_ids: list[str],
                            stack: list[str | None]) -> int:
    """Fill the holes of `stack`, `concurrency` at a time; the first failure cancels the rest."""
    limiter = trio.CapacityLimiter(max(1, job.concurrency))
    errors: list[Exception] = []
    moved = [0]

    async def one(i: int, nursery: trio.Nursery) -> None:
        try:
            async with limiter:
                stack[i] = await _fetch(job, descs[i], diff_ids[i], moved)
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i, found in enumerate(stack):
            if found is None:
                nursery.start_soon(one, i, nursery)
    if errors:
        raise errors[0]
    return moved[0]


async def _fetch(job: PullJob, desc: Descriptor, diff_id: str, moved: list[int]) -> str:
    """Download and unpack one layer into a new layer directory; return its id."""
    compression = COMPRESSION.get(desc.mediaType or "application/vnd.oci.image.layer.v1.tar+gzip", "gzip")
    attempt = 0
    while True:
        layer_id, path = await job.storage.create_layer()
        job.created.append(layer_id)
        job.pin(layer_id)
        try:
            async with job.client.blob(job.reference.repository, desc.digest) as reply:
                unpacked = await job.files.unpack(path, compression, _verified(reply.chunks(), desc, job, moved))
            if unpacked.diff_id != diff_id:
                raise RegistryError(f"layer {desc.digest} does not match its diff id: expected {diff_id}, "
                                    f"got {unpacked.diff_id}")
        except (RegistryError, TransportError) as exc:
            with trio.CancelScope(shield=True):
                await discard_layer(job.storage, layer_id)
            job.created.remove(layer_id)
            if not exc.transient or attempt >= job.retries:
                raise
            log.warning("layer %s: %s; trying again", desc.digest, exc)
            await job.progress(short(desc.digest), "Retrying", 0, desc.size)
            await RegistryClient.pause(attempt)
            attempt += 1
            continue
        ref = job.reference
        job.index.put(LayerRecord(id=layer_id, diff_id=diff_id, blob=BlobRef(
            digest=desc.digest, media_type=desc.mediaType, size=desc.size, registry=ref.registry,
            repository=ref.repository)))
        await job.progress(short(desc.digest), "Pull complete", desc.size, desc.size)
        return layer_id


async def _verified(chunks: Chunks, desc: Descriptor, job: PullJob, moved: list[int]) -> Chunks:
    """Pass `chunks` on, hashing them; a blob longer, shorter or other than `desc` raises at its end."""
    algorithm, _, expected = desc.digest.partition(":")
    hasher = hashlib.new(algorithm)
    received = 0
    layer = short(desc.digest)
    async for chunk in chunks:
        received += len(chunk)
        if received > desc.size:
            raise RegistryError(f"blob {desc.digest} is larger than its manifest says ({desc.size} bytes)")
        hasher.update(chunk)
        moved[0] += len(chunk)
        await job.progress(layer, "Downloading", received, desc.size)
        yield chunk
    if received != desc.size or hasher.hexdigest() != expected:
        raise RegistryError(f"digest mismatch for blob {desc.digest}: got {algorithm}:{hasher.hexdigest()} "
                            f"({received} bytes)")
    await job.progress(layer, "Extracting", received, desc.size)


def short(digest: str) -> str:
    return digest.partition(":")[2][:12]
