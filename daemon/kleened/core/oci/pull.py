"""Pulling an image: manifest (an index's entry for the platform), config, then the layers.

Flow: the manifest (by tag or digest; an index is resolved to the platform's entry), the config
blob, then every layer the store does not hold yet (by diff id) is downloaded, at most
`concurrency` at a time, each straight into a fresh layer directory: one worker thread per
layer reads the socket, hashes the blob and unpacks it as it arrives (the event loop only
sees progress), and its digest, size and diff id must all match or the layer is removed. A
transfer that breaks is started again from the beginning (a new layer), up to `retries` times.

Nothing is left behind: a failed or cancelled pull removes, shielded, every layer it made
(kept ones included) before the error propagates; a pull killed with the daemon leaves layers
no image stacks, which the start-up garbage collection removes (`Images.collect_garbage`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from ...platform.base import TransportError, Unpacked
from .interfaces import BlockingReply, Progress
from .layers import BlobRef
from .manifest import (
    COMPRESSION,
    INDEXES,
    MAX_CONFIG,
    OCI_LAYER_GZIP,
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
from .unpack import LayerMaker, VerifiedReader

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.05  # seconds between byte counts sent from a downloading thread


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
    maker: LayerMaker  # makes the layers and removes them all if the pull fails
    progress: Progress
    concurrency: int = 3
    retries: int = 3


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
        await job.maker.discard_all()
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
        found = job.maker.index.find(diff_id, exclude=[s for s in stack if s])
        if found is not None:
            job.maker.pin(found)
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
    """Fill the holes of `stack`, `concurrency` at a time, bottom layer first (as Docker does: a
    base layer of many small files is the slowest to unpack, so it should not wait for a slot);
    the first failure cancels the rest."""
    slots = trio.Semaphore(max(1, job.concurrency))
    errors: list[Exception] = []
    moved = [0]

    async def one(i: int, nursery: trio.Nursery) -> None:
        try:
            stack[i] = await _fetch(job, descs[i], diff_ids[i], moved)
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        for i, found in enumerate(stack):
            if found is None:
                await slots.acquire()  # here, in order: tasks started at once would take slots in any order
                nursery.start_soon(one, i, nursery)
    if errors:
        raise errors[0]
    return moved[0]


async def _fetch(job: PullJob, desc: Descriptor, diff_id: str, moved: list[int]) -> str:
    """Download and unpack one layer into a new layer directory; return its id."""
    compression = COMPRESSION.get(desc.mediaType or OCI_LAYER_GZIP, "gzip")
    layer, ref = short(desc.digest), job.reference
    blob = BlobRef(digest=desc.digest, media_type=desc.mediaType, size=desc.size, registry=ref.registry,
                   repository=ref.repository)

    async def on_chunk(received: int) -> None:
        moved[0] += received - sent[0]
        sent[0] = received
        await job.progress(layer, "Downloading" if received < desc.size else "Extracting", received, desc.size)

    def unpack(path: Path, counts: _ThreadProgress, reply: BlockingReply) -> Unpacked:  # in the worker thread
        source = VerifiedReader(reply.read, desc.digest, desc.size, counts.note)
        return job.maker.files.unpack_blocking(path, compression, source)

    async def download(path: Path) -> Unpacked:
        counts = _ThreadProgress(on_chunk, desc.size)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(counts.run)
                try:
                    return await job.client.download(ref.repository, desc.digest,
                                                     functools.partial(unpack, path, counts))
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the download's own error (`counts.run` raises none)
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            with trio.CancelScope(shield=True):
                await counts.flush()  # the last count, before any later status

    for attempt in range(job.retries + 1):
        sent = [0]
        try:
            layer_id = await job.maker.make_with(download, diff_id, blob)
        except (RegistryError, TransportError) as exc:
            if not exc.transient or attempt >= job.retries:
                raise
            log.warning("layer %s: %s; trying again", desc.digest, exc)
            await job.progress(layer, "Retrying", 0, desc.size)
            await RegistryClient.pause(attempt)
            continue
        await job.progress(layer, "Pull complete", desc.size, desc.size)
        return layer_id
    raise AssertionError("unreachable")


class Flusher:
    """Sends what was noted since it last ran (`flush`, by a subclass) from a task of its own
    (`run`), woken by `wake()`: whoever notes never waits for the sending."""

    def __init__(self) -> None:
        self._wake = trio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        raise NotImplementedError


class _ThreadProgress(Flusher):
    """Byte counts from a downloading thread that never waits for the event loop (a call into
    trio from a busy thread waits for the GIL, up to 5 ms each time): the thread queues its
    latest count at most every `PROGRESS_INTERVAL` (and the last one), a task passes it on."""

    def __init__(self, send: Callable[[int], Awaitable[None]], size: int) -> None:
        super().__init__()
        self._send = send
        self._size = size
        self._token = trio.lowlevel.current_trio_token()
        self._queued_at = 0.0
        self._latest = self._sent = 0

    def note(self, received: int) -> None:
        """In the thread: bytes received so far."""
        now = time.monotonic()
        if received == self._size or now - self._queued_at >= PROGRESS_INTERVAL:
            self._queued_at = now
            self._token.run_sync_soon(self._set, received)

    def _set(self, received: int) -> None:
        self._latest = received
        self.wake()

    async def flush(self) -> None:
        if self._latest != self._sent:
            self._sent = self._latest
            await self._send(self._sent)


def short(digest: str) -> str:
    return digest.partition(":")[2][:12]
