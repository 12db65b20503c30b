"""OCI image layouts for tests, written from scratch: layers from directories or from listed
entries (whiteouts included), configs, manifests, multi-platform indexes. `skopeo` copies them
into a test registry (`tests.registry`)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd", "": "application/vnd.oci.image.layer.v1.tar"}

Entry = tuple[str, "bytes | None"]  # (name, content); None is a directory, a name ending "/" too


def tar_of_dir(path: Path, *, salt: bytes = b"") -> bytes:
    """The tree as a tar; with `salt`, a file holding it is added (a layer no other test has)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=".")
        if salt:
            info = tarfile.TarInfo("etc/layer-salt")
            info.size, info.mode = len(salt), 0o644
            tar.addfile(info, io.BytesIO(salt))
    return buf.getvalue()


def tar_of_entries(entries: list[Entry], mode: int = 0o644) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        (dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.manifests: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> tuple[str, int]:
        digest = digest_of(data)
        (self.dest / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return digest, len(data)

    def layer(self, tar: bytes, compression: str = "gzip") -> tuple[dict[str, Any], str]:
        """(descriptor, diff id) of a layer made of the uncompressed `tar`."""
        digest, size = self.blob(compress(tar, compression))
        return {"mediaType": LAYER_TYPES[compression], "digest": digest, "size": size}, digest_of(tar)

    def layer_of_dir(self, path: Path, compression: str = "zstd") -> tuple[dict[str, Any], str]:
        """A layer of the directory `path`, streamed to its blob file (for a whole system's tree,
        too large to hold in memory); (descriptor, diff id)."""
        if compression not in ("zstd", ""):
            raise ValueError(f"layer_of_dir writes zstd or plain tars, not {compression!r}")
        spool = self.dest / "blobs" / "layer.partial"
        with spool.open("wb") as raw:
            blob = _Hashing(raw)
            compressor = zstandard.ZstdCompressor(level=3, threads=-1) if compression == "zstd" else None
            sink: Any = compressor.stream_writer(blob, closefd=False) if compressor else blob
            tar_hash = _Hashing(sink)
            with tarfile.open(fileobj=tar_hash, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(path, arcname=".")
            if compressor:
                sink.close()
        digest = "sha256:" + blob.hasher.hexdigest()
        os.replace(spool, blob_path(self.dest, digest))
        return {"mediaType": LAYER_TYPES[compression], "digest": digest, "size": blob.size}, \
            "sha256:" + tar_hash.hasher.hexdigest()

    def image(self, layers: list[tuple[dict[str, Any], str]], config: dict[str, Any] | None = None,
              os_arch: tuple[str, str] = ("linux", "amd64"), labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Write config and manifest blobs; return the manifest's descriptor (with its platform)."""
        run = {"Cmd": ["/bin/sh"], **(config or {})}
        if labels:
            run["Labels"] = labels
        body = {"architecture": os_arch[1], "os": os_arch[0], "config": run,
                "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
                "history": [{"created_by": "tests"} for _ in layers]}
        config_digest, config_size = self.blob(json.dumps(body).encode())
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                               "size": config_size},
                    "layers": [desc for desc, _ in layers]}
        digest, size = self.blob(json.dumps(manifest).encode())
        return {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                "platform": {"os": os_arch[0], "architecture": os_arch[1]}}

    def index(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        digest, size = self.blob(json.dumps(body).encode())
        return {"mediaType": OCI_INDEX, "digest": digest, "size": size}

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        entry = {k: v for k, v in descriptor.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.manifests.append(entry)
        (self.dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.manifests}))


class _Hashing:
    """A write-only file that hashes and counts what goes through to `out`."""

    def __init__(self, out: BinaryIO | Any) -> None:
        self.out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def random_file(size: int, seed: int) -> bytes:
    """`size` bytes that do not compress (layer contents for the benchmark and the size tests)."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def busybox_layout(dest: Path, rootfs: Path, tag: str = "latest", *, extra: list[list[Entry]] | None = None,
                   compression: str = "gzip", config: dict[str, Any] | None = None,
                   salt: bytes = b"") -> dict[str, Any]:
    """A layout with one image: the busybox rootfs, then one layer per `extra` entry list. A
    `salt` makes the base layer this layout's own (registries and the daemon are shared by a
    module's tests: a test that counts blobs pushed or mounted needs layers nobody else moved)."""
    layout = Layout(dest)
    layers = [layout.layer(tar_of_dir(rootfs, salt=salt), compression)]
    layers += [layout.layer(tar_of_entries(entries), compression) for entries in extra or []]
    manifest = layout.image(layers, config)
    layout.tag(manifest, tag)
    return manifest


