"""Structs of the operations endpoints (extensions, docs/operations.md): copying files in and out
of containers (`cp`), committing a container to an image, and the system-wide views
(`system info`, `system df`, `system prune`).

Vocabulary: a *container path* is a path as the container sees it (absolute, resolved inside
the container's root); an *entry* is one file, directory or link of a tar stream.
"""

from __future__ import annotations

import msgspec

from .models import _Request, _Response

# --- cp -----------------------------------------------------------------------------------------


class PathStat(_Response):
    """`GET /containers/{id}/archive/stat?path=`: what is at a container path.

    `name` is the last component of the path as given (`/` for the root), `mode` the whole
    `st_mode` (type bits included), `link_target` the target of a symbolic link (the link itself
    is described unless the path ends with `/` or `/.`, or `follow_link` is asked).
    """

    name: str
    size: int
    mode: int
    mtime: int  # seconds since the epoch
    link_target: str = ""


class ArchiveGetConfig(_Request):
    """First frame of `/containers/{id}/archive/get`: the container path to send as a tar stream;
    `follow_link`: a symbolic link there is sent as what it points to."""

    path: str
    follow_link: bool = False


class ArchivePutConfig(_Request):
    """First frame of `/containers/{id}/archive/put`: the directory (a container path, it must
    exist) the client's tar stream is extracted into."""

    path: str


class ArchivePutResult(_Response):
    """The close frame's data of a finished upload, as JSON."""

    entries: int
    bytes: int


# --- commit ---------------------------------------------------------------------------------


class ContainerCommitConfig(_Request):
    """`POST /containers/{id}/commit`: an image of the container's filesystem.

    `changes` are Dockerfile lines (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, SHELL,
    STOPSIGNAL, USER, VOLUME, WORKDIR, HEALTHCHECK) applied to the image's settings.
    """

    tag: str = ""  # name[:tag]; "" makes an untagged image
    changes: list[str] = msgspec.field(default_factory=list)


# --- system -----------------------------------------------------------------------------------


class Listener(_Response):
    kind: str  # "unix" or "tcp"
    address: str  # socket path or host:port
    tls: bool = False


class SystemInfo(_Response):
    """`GET /system/info`."""

    version: str
    api_version: str
    backend: str  # the runtime (runc, jail)
    runtime_version: str
    storage_driver: str
    kernel: str
    os: str
    cgroup_mode: str  # "v2", "v1", "hybrid" or "none"
    state_root: str
    listeners: list[Listener]
    containers: int
    containers_running: int
    containers_stopped: int
    images: int
    volumes: int
    networks: int


class ImageUsage(_Response):
    id: str
    name: str
    tag: str
    size: int  # bytes of the layers this image stacks
    unique_size: int  # bytes of the layers no other image or container stacks
    containers: int


class ContainerUsage(_Response):
    id: str
    name: str
    image_id: str
    size: int  # bytes of its writable layer
    running: bool


class VolumeUsage(_Response):
    name: str
    size: int
    containers: int


class DiskUsage(_Response):
    """`GET /system/df`: space per object (bytes), and what `system prune` could reclaim."""

    images: list[ImageUsage]
    containers: list[ContainerUsage]
    volumes: list[VolumeUsage]
    layers_size: int  # every layer on disk, counted once
    build_cache_size: int  # RUN cache mounts
    reclaimable_images: int
    reclaimable_containers: int
    reclaimable_volumes: int


class SystemPruneConfig(_Request):
    """`POST /system/prune`: stopped containers, unused networks, dangling images, and with
    `volumes` the volumes no container uses; with `all` every unused image, not only dangling."""

    volumes: bool = False
    all: bool = False


class SystemPruneResult(_Response):
    containers: list[str]
    networks: list[str]
    images: list[str]
    volumes: list[str]
    space_reclaimed: int  # bytes
