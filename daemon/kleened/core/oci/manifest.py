"""OCI and Docker image documents: indexes, manifests and configs, and what they mean here.

Only what kleened reads or writes is modelled; unknown keys are ignored on decode. Both
families are accepted: OCI (`application/vnd.oci.image.*`) and Docker schema 2
(`application/vnd.docker.distribution.manifest.v2+json` and `.list.v2+json`). Schema 1
manifests are refused (deprecated and unsigned content).
"""

from __future__ import annotations

import platform as host_platform
from typing import Any

import msgspec

from kleene_protocol.models import HealthConfig

from .reference import ReferenceError_, check_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
COMPRESSION = {  # layer media type -> "gzip", "zstd" or "" (plain tar)
    OCI_LAYER: "", OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd", DOCKER_LAYER_GZIP: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip", DOCKER_FOREIGN: "gzip",
}  # fmt: skip
MAX_MANIFEST = 4 * 1024 * 1024  # bytes, as distribution's own limit
MAX_CONFIG = 8 * 1024 * 1024
_NS = 1_000_000_000


class ManifestError(ValueError):
    """A document that is not a usable image; `str()` is for the client."""


class Platform(msgspec.Struct, kw_only=True, omit_defaults=True):
    architecture: str = ""
    os: str = ""
    variant: str = ""


class Descriptor(msgspec.Struct, kw_only=True, omit_defaults=True):
    mediaType: str = ""
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] | None = None


class Document(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An index or a manifest (they differ by which list they carry)."""

    schemaVersion: int = 2
    mediaType: str = ""
    manifests: list[Descriptor] | None = None
    config: Descriptor | None = None
    layers: list[Descriptor] | None = None
    annotations: dict[str, str] | None = None


class ImageManifest(msgspec.Struct, kw_only=True):
    """An image manifest as we write it (every key present, as registries require)."""

    schemaVersion: int = 2
    mediaType: str = OCI_MANIFEST
    config: Descriptor
    layers: list[Descriptor]


class HealthCheck(msgspec.Struct, omit_defaults=True):
    Test: list[str] | None = None
    Interval: int = 0
    Timeout: int = 0
    StartPeriod: int = 0
    StartInterval: int = 0
    Retries: int = 0


class RunConfig(msgspec.Struct, omit_defaults=True):
    User: str = ""
    ExposedPorts: dict[str, Any] | None = None
    Env: list[str] | None = None
    Entrypoint: list[str] | None = None
    Cmd: list[str] | None = None
    Volumes: dict[str, Any] | None = None
    WorkingDir: str = ""
    Labels: dict[str, str] | None = None
    StopSignal: str = ""
    Healthcheck: HealthCheck | None = None
    OnBuild: list[str] | None = None
    Shell: list[str] | None = None


class RootFS(msgspec.Struct):
    type: str = "layers"
    diff_ids: list[str] = msgspec.field(default_factory=list)


class History(msgspec.Struct, omit_defaults=True):
    created: str = ""
    created_by: str = ""
    comment: str = ""
    empty_layer: bool = False


class ImageConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    created: str = ""
    architecture: str = ""
    os: str = ""
    variant: str = ""
    config: RunConfig | None = None
    rootfs: RootFS = msgspec.field(default_factory=RootFS)
    history: list[History] | None = None


def decode_document(data: bytes, media_type: str = "") -> Document:
    """Decode a manifest or an index; the media type is the header's, else the document's."""
    try:
        doc = msgspec.json.decode(data, type=Document)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"invalid manifest: {exc}") from None
    kind = doc.mediaType or media_type.split(";")[0].strip()
    if not doc.mediaType:
        doc = msgspec.structs.replace(doc, mediaType=kind or (OCI_INDEX if doc.manifests is not None else OCI_MANIFEST))
    if doc.schemaVersion != 2:
        raise ManifestError(f"unsupported manifest schema version {doc.schemaVersion} (only schema 2 and OCI)")
    if doc.mediaType in INDEXES and doc.manifests is None:
        raise ManifestError("invalid index: no 'manifests'")
    if doc.mediaType in MANIFESTS and (doc.config is None or doc.layers is None):
        raise ManifestError("invalid manifest: no 'config' or 'layers'")
    if doc.mediaType not in INDEXES + MANIFESTS:
        raise ManifestError(f"unsupported manifest type '{doc.mediaType}'")
    for desc in [*(doc.manifests or []), *(doc.layers or []), *([doc.config] if doc.config else [])]:
        _check_descriptor(desc)
    return doc


def _check_descriptor(desc: Descriptor) -> None:
    try:
        check_digest(desc.digest)
    except ReferenceError_ as exc:
        raise ManifestError(f"invalid manifest: {exc}") from None
    if desc.size < 0:
        raise ManifestError(f"invalid manifest: negative size for {desc.digest}")


def decode_config(data: bytes) -> ImageConfig:
    try:
        config = msgspec.json.decode(data, type=ImageConfig)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"invalid image config: {exc}") from None
    if config.rootfs.type != "layers":
        raise ManifestError(f"unsupported rootfs type '{config.rootfs.type}'")
    return config


# --- platforms ----------------------------------------------------------------------------------

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "amd64": "amd64", "arm64": "arm64"}
_VARIANT = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8"}


def host() -> Platform:
    """This host's platform in OCI words (`linux/amd64`, `freebsd/arm64/v8`)."""
    machine = host_platform.machine()
    return Platform(os=host_platform.system().lower(), architecture=_ARCH.get(machine, machine),
                    variant=_VARIANT.get(machine, ""))


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]` -> Platform; "" is the host's."""
    if not text:
        return host()
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ManifestError(f"invalid platform '{text}': expected os/arch[/variant]")
    return Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else "")


def describe(p: Platform) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def select(index: Document, wanted: Platform) -> Descriptor:
    """The index entry for `wanted`; a variant is matched when both sides name one.

    arm64's variant is optional (`v8` is the only one), so a missing variant matches it.
    """
    candidates = []
    for entry in index.manifests or []:
        p = entry.platform
        if p is None or p.os != wanted.os or p.architecture != wanted.architecture:
            continue
        if wanted.variant and p.variant and p.variant != wanted.variant:
            continue
        if entry.mediaType and entry.mediaType not in MANIFESTS + INDEXES:
            continue
        candidates.append(entry)
    if not candidates:
        offered = ", ".join(sorted({describe(e.platform) for e in index.manifests or [] if e.platform})) or "none"
        raise ManifestError(f"no image for platform {describe(wanted)} (the index offers: {offered})")
    exact = [e for e in candidates if e.platform and e.platform.variant == wanted.variant]
    return (exact or candidates)[0]


# --- what a config means for our Image ----------------------------------------------------------


def image_fields(config: ImageConfig) -> dict[str, Any]:
    """The `Image` fields an image config sets (Env, Cmd, Entrypoint, WorkingDir, User, ...)."""
    run = config.config or RunConfig()
    return {
        "cmd": list(run.Cmd or []),
        "entrypoint": list(run.Entrypoint) if run.Entrypoint else None,
        "env": list(run.Env or []),
        "user": run.User or "root",
        "workdir": run.WorkingDir or "/",
        "exposed_ports": sorted(run.ExposedPorts or {}),
        "labels": dict(run.Labels or {}),
        "volumes": sorted(run.Volumes or {}),
        "stop_signal": run.StopSignal,
        "shell": list(run.Shell or []),
        "onbuild": list(run.OnBuild or []),
        "healthcheck": _health(run.Healthcheck),
        "os": config.os,
        "architecture": config.architecture,
    }


def _health(check: HealthCheck | None) -> HealthConfig | None:
    if check is None or not check.Test:
        return None
    defaults = HealthConfig()
    return HealthConfig(
        test=list(check.Test),
        interval=check.Interval / _NS if check.Interval else defaults.interval,
        timeout=check.Timeout / _NS if check.Timeout else defaults.timeout,
        start_period=check.StartPeriod / _NS if check.StartPeriod else defaults.start_period,
        start_interval=check.StartInterval / _NS if check.StartInterval else defaults.start_interval,
        retries=check.Retries or defaults.retries,
    )


def run_config(image: Any) -> RunConfig:
    """The config section of an image we export (the inverse of `image_fields`)."""
    health = image.healthcheck
    return RunConfig(
        User=image.user if image.user != "root" else "",
        ExposedPorts={port: {} for port in image.exposed_ports} or None,
        Env=list(image.env) or None,
        Entrypoint=list(image.entrypoint) if image.entrypoint else None,
        Cmd=list(image.cmd) if image.cmd is not None else None,
        Volumes={path: {} for path in image.volumes} or None,
        WorkingDir=image.workdir if image.workdir != "/" else "",
        Labels=dict(image.labels) or None,
        StopSignal=image.stop_signal,
        Healthcheck=None if health is None else HealthCheck(
            Test=list(health.test), Interval=int(health.interval * _NS), Timeout=int(health.timeout * _NS),
            StartPeriod=int(health.start_period * _NS), StartInterval=int(health.start_interval * _NS),
            Retries=health.retries),
        OnBuild=list(image.onbuild) or None,
        Shell=list(image.shell) or None,
    )
