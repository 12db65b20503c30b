"""What an image's Dockerfile settings mean for its containers: VOLUME paths and STOPSIGNAL.

- VOLUME: a container created from the image gets an *anonymous volume* at each of the image's volume paths where
  the create request mounts nothing (Docker's rule); it is a volume like any other, named with 64 hex digits,
  filled from the image's directory on first use (the same rule as named volumes). The store marks it anonymous
  (kind `anonvolume`) before it exists, so `DELETE /containers/{id}?volumes=true` (`klee rm -v`) can remove the
  anonymous volumes of the container, and only those, once no other container mounts them.
- STOPSIGNAL: the signal `stop` sends first, instead of SIGTERM; KILL still follows after the grace period.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import secrets
import signal

import msgspec

from kleene_protocol.models import ContainerConfig, Image, MountPoint, MountPointConfig

from .builder.instructions import signal_number
from .clock import now_iso
from .errors import NotFound
from .store import Store
from .volumes import Volumes

log = logging.getLogger(__name__)

ANONYMOUS_VOLUME = "anonvolume"


class _Marker(msgspec.Struct):
    created: str


def stop_signal_of(image: Image | None) -> int:
    """The signal that stops containers of `image` (SIGTERM when it has no valid STOPSIGNAL)."""
    if image is None or not image.stop_signal:
        return signal.SIGTERM
    return signal_number(image.stop_signal) or signal.SIGTERM


def with_image_volumes(store: Store, config: ContainerConfig, image: Image) -> ContainerConfig:
    """`config` with an anonymous volume mount for each image volume path it leaves unmounted."""
    if not image.volumes:
        return config
    taken = {posixpath.normpath(m.destination) for m in config.mounts or []}
    added = []
    for path in image.volumes:
        if posixpath.normpath(path) in taken:
            continue
        name = secrets.token_hex(32)
        store.put(ANONYMOUS_VOLUME, name, _Marker(created=now_iso()), created=now_iso())  # before it exists
        added.append(MountPointConfig(type="volume", source=name, destination=path))
        taken.add(posixpath.normpath(path))
    if not added:
        return config
    return msgspec.structs.replace(config, mounts=[*(config.mounts or []), *added])


async def remove_anonymous_volumes(store: Store, volumes: Volumes, mounts: list[MountPoint]) -> list[str]:
    """Remove the anonymous volumes among `mounts` (of a removed container) that no container mounts any more;
    return their names. One still in use by another container stays, as in Docker."""
    removed = []
    for mount in mounts:
        if mount.type != "volume" or not store.exists(ANONYMOUS_VOLUME, mount.source):
            continue
        if volumes.mountpoints(mount.source):
            log.info("anonymous volume still in use, kept", extra={"volume": mount.source})
            continue
        with contextlib.suppress(NotFound):  # removed by its user meanwhile: only the marker is left
            await volumes.remove(mount.source)
        store.delete(ANONYMOUS_VOLUME, mount.source)
        removed.append(mount.source)
    return removed
