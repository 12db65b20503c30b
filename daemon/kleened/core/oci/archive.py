"""Image archives: `save` writes an OCI image layout as a tar stream, `load` reads one (or a
`docker save` archive) back.

A saved archive holds `oci-layout`, `index.json` (one entry per image, named by the
`io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations) and the blobs,
plus Docker's `manifest.json` (`RepoTags`, layer paths), so that `docker load` (old and new)
and `podman load` accept it. Layers are our own uncompressed, deterministic tars: their digest
is their diff id, measured once and kept (`export.own_blob`).

Load prefers `manifest.json` when there is one (it names the images), else `index.json`
(the host's platform is picked from a nested index). Every layer is checked against the diff id
of its config, and OCI blobs against their digests too; layers the store already holds (by diff
id) are not unpacked again. A failure removes every layer the load made.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..records import ImageRecord
from .export import LayerBlob, config_blob, manifest_blob, own_blob
from .interfaces import Chunks, LayerFiles, SpooledArchive
from .layers import LayerIndex
from .manifest import (
    COMPRESSION,
    INDEXES,
    MAX_CONFIG,
    MAX_MANIFEST,
    OCI_MANIFEST,
    ImageConfig,
    ManifestError,
    decode_config,
    decode_document,
    host,
    select,
)
from .reference import ReferenceError_, parse
from .registry import sha256
from .unpack import LayerMaker, verified

Send = Callable[[bytes], Awaitable[None]]
Emit = Callable[[str], Awaitable[None]]
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
_BLOCK = 512
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _DockerEntry(msgspec.Struct):
    Config: str
    Layers: list[str]
    RepoTags: list[str] | None = None


# --- save ---------------------------------------------------------------------------------------


class _TarWriter:
    """A tar stream written member by member to `send`: headers, data, padding, end blocks."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.names: set[str] = set()

    async def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        self.names.add(name)
        await self._send(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    async def file(self, name: str, data: bytes) -> None:
        await self._header(name, len(data))
        await self._send(data + b"\0" * (-len(data) % _BLOCK))

    async def stream(self, name: str, size: int, chunks: Chunks) -> None:
        await self._header(name, size)
        sent = 0
        async for chunk in chunks:
            sent += len(chunk)
            if sent > size:
                raise ValueError(f"{name} grew while it was saved")
            await self._send(chunk)
        if sent != size:
            raise ValueError(f"{name} changed while it was saved ({sent} bytes, not {size})")
        await self._send(b"\0" * (-size % _BLOCK))

    async def end(self) -> None:
        await self._send(b"\0" * (2 * _BLOCK))


def blob_name(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"blobs/{algorithm}/{hex_}"


def _names(image: ImageRecord, default_registry: str) -> tuple[str, str]:
    """(full reference, familiar name:tag) for the archive, or ("", "") when the name is not a
    valid reference (upstream-style names like `FreeBSD:latest` stay local)."""
    if not image.name or not image.tag:
        return "", ""
    try:
        ref = parse(f"{image.name}:{image.tag}", default_registry)
    except ReferenceError_:
        return "", ""
    name, tag = ref.familiar(default_registry)
    return str(ref), f"{name}:{tag}"


async def save(images: list[ImageRecord], *, index: LayerIndex, files: LayerFiles,
               layer_path: Callable[[str], Path], send: Send, default_registry: str) -> None:
    """Write `images` as one OCI layout tar to `send`."""
    tar = _TarWriter(send)
    await tar.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    entries: list[dict[str, Any]] = []
    docker: list[dict[str, Any]] = []
    for image in images:
        layers = [await own_blob(index, files, layer_path, layer, "") for layer in image.layers]
        for blob in layers:
            await _save_layer(tar, files, layer_path, blob)
        config = config_blob(image, layers)
        config_digest = sha256(config)
        manifest = manifest_blob(config, config_digest, layers)
        digest = sha256(manifest)
        for name, data in ((blob_name(config_digest), config), (blob_name(digest), manifest)):
            if name not in tar.names:
                await tar.file(name, data)
        full, familiar = _names(image, default_registry)
        annotations = {NAME_ANNOTATION: full, REF_ANNOTATION: image.tag} if full else {}
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                        **({"annotations": annotations} if annotations else {})})
        docker.append({"Config": blob_name(config_digest), "RepoTags": [familiar] if familiar else [],
                       "Layers": [blob_name(blob.descriptor.digest) for blob in layers]})
    await tar.file("index.json", msgspec.json.encode({"schemaVersion": 2, "mediaType": INDEXES[0],
                                                      "manifests": entries}))
    await tar.file("manifest.json", msgspec.json.encode(docker))
    await tar.end()


async def _save_layer(tar: _TarWriter, files: LayerFiles, layer_path: Callable[[str], Path], blob: LayerBlob) -> None:
    name = blob_name(blob.descriptor.digest)
    if name in tar.names:
        return
    async with files.pack(layer_path(blob.layer_id), "") as chunks:
        await tar.stream(name, blob.descriptor.size, chunks)


# --- load ---------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """An image read from an archive: what an `ImageRecord` needs besides its id."""

    config: ImageConfig
    layers: list[str]
    name: str
    tag: str
    digest: str


async def load(archive: SpooledArchive, maker: LayerMaker, emit: Emit, default_registry: str) -> list[Loaded]:
    """Every image of the archive; layers are made with `maker` (the caller removes them on failure)."""
    names = set(archive.names())
    if "manifest.json" in names:
        return await _load_docker(archive, maker, emit, default_registry)
    if "index.json" in names:
        return await _load_oci(archive, maker, emit, default_registry)
    raise ManifestError("not an image archive: no manifest.json (docker save) and no index.json (OCI layout)")


async def _load_docker(archive: SpooledArchive, maker: LayerMaker, emit: Emit, registry: str) -> list[Loaded]:
    try:
        entries = msgspec.json.decode(await archive.read("manifest.json", MAX_MANIFEST), type=list[_DockerEntry])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"invalid manifest.json: {exc}") from None
    loaded = []
    for entry in entries:
        config = decode_config(await archive.read(entry.Config, MAX_CONFIG))
        if len(entry.Layers) != len(config.rootfs.diff_ids):
            raise ManifestError(f"{entry.Config} lists {len(config.rootfs.diff_ids)} layers, manifest.json "
                                f"{len(entry.Layers)}")
        layers = await _layers(archive, maker, emit, [(path, "", 0, "") for path in entry.Layers],
                               config.rootfs.diff_ids)
        name, tag = _local_name((entry.RepoTags or [""])[0], registry)
        loaded.append(Loaded(config=config, layers=layers, name=name, tag=tag, digest=""))
    return loaded


async def _load_oci(archive: SpooledArchive, maker: LayerMaker, emit: Emit, registry: str) -> list[Loaded]:
    index = decode_document(await archive.read("index.json", MAX_MANIFEST), INDEXES[0])
    loaded = []
    for entry in index.manifests or []:
        data = await archive.read(blob_name(entry.digest), MAX_MANIFEST)
        doc = decode_document(data, entry.mediaType)
        digest = entry.digest
        if doc.mediaType in INDEXES:
            chosen = select(doc, host())
            doc = decode_document(await archive.read(blob_name(chosen.digest), MAX_MANIFEST), chosen.mediaType)
        assert doc.config is not None and doc.layers is not None
        config = decode_config(await archive.read(blob_name(doc.config.digest), MAX_CONFIG))
        if len(doc.layers) != len(config.rootfs.diff_ids):
            raise ManifestError(f"manifest {entry.digest} and its config disagree on the number of layers")
        specs = [(blob_name(d.digest), d.digest, d.size, COMPRESSION.get(d.mediaType, "")) for d in doc.layers]
        layers = await _layers(archive, maker, emit, specs, config.rootfs.diff_ids)
        annotations = entry.annotations or {}
        name, tag = _local_name(annotations.get(NAME_ANNOTATION) or annotations.get(REF_ANNOTATION, ""), registry)
        loaded.append(Loaded(config=config, layers=layers, name=name, tag=tag, digest=digest))
    return loaded


async def _layers(archive: SpooledArchive, maker: LayerMaker, emit: Emit,
                  specs: list[tuple[str, str, int, str]], diff_ids: list[str]) -> list[str]:
    """The layer ids for `specs` (path, digest or "", size, compression or "" to sniff)."""
    stack: list[str] = []
    for (path, digest, size, compression), diff_id in zip(specs, diff_ids, strict=True):
        found = maker.index.find(diff_id, exclude=stack)
        if found is not None:
            maker.pin(found)
            stack.append(found)
            await emit(f"{diff_id.partition(':')[2][:12]}: Already exists\n")
            continue
        chunks: Chunks = archive.open(path)
        if digest:
            chunks = verified(chunks, digest, size)
        first, chunks = await _peek(chunks)
        kind = compression or ("gzip" if first[:2] == b"\x1f\x8b" else "zstd" if first[:4] == _ZSTD_MAGIC else "")
        stack.append(await maker.make(kind, chunks, diff_id))
        await emit(f"{diff_id.partition(':')[2][:12]}: Loaded\n")
    return stack


async def _peek(chunks: Chunks) -> tuple[bytes, Chunks]:
    """The first chunk, and the stream with it still at its front."""
    first = b""
    async for chunk in chunks:
        first = chunk
        break

    async def again() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    return first, again()


def _local_name(reference: str, registry: str) -> tuple[str, str]:
    """A reference from an archive as a local (name, tag); a bare tag or nothing gives ("", "")."""
    if not reference or ("/" not in reference and ":" not in reference and "." not in reference):
        return "", ""
    try:
        return parse(reference, registry).familiar(registry)
    except ReferenceError_:
        return "", ""
