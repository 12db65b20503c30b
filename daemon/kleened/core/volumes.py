"""Volumes: named directories the daemon owns and mounts into containers.

A volume's identifier is its name (volumes have no id). Mount records (kind "mount") link
containers to volumes and host paths; they live in the store under the mount's source so a
volume's users are one indexed query away.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from kleene_protocol.models import MountPoint, Volume, VolumeInspect

from ..platform.base import VolumeStorage
from .clock import now_iso
from .errors import Conflict, InvalidArgument, NotFound
from .events import Events
from .store import Store

log = logging.getLogger(__name__)

VOLUME = "volume"
MOUNT = "mount"
NO_SUCH_VOLUME = "No such volume"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


def mount_key(container_id: str, destination: str) -> str:
    return f"{container_id}:{destination}"


class Volumes:
    def __init__(self, store: Store, storage: VolumeStorage, is_running: Callable[[str], bool],
                 events: Events | None = None) -> None:
        self._store = store
        self._storage = storage
        self._is_running = is_running
        self._events = events if events is not None else Events()

    def get(self, name: str) -> Volume:
        volume = self._store.get(VOLUME, name, Volume)
        if volume is None:
            raise NotFound(NO_SUCH_VOLUME)
        return volume

    async def create(self, name: str) -> Volume:
        """Create `name`, or return it unchanged if it exists (upstream's idempotence).

        Unlike upstream (which passes any name to `zfs create`), names are checked: a volume
        name becomes a directory name.
        """
        existing = self._store.get(VOLUME, name, Volume)
        if existing is not None:
            return existing
        if not _NAME.match(name):
            raise InvalidArgument(
                f"invalid volume name '{name}': use letters, digits, '_', '.' and '-', starting with a letter or digit"
            )
        path = await self._storage.create_volume(name)
        volume = Volume(name=name, dataset=self._storage.dataset(name), mountpoint=str(path), created=now_iso())
        self._store.put(VOLUME, name, volume, name=name, created=volume.created)
        log.info("volume created", extra={"volume": name})
        self._events.publish("volume", "create", name, name=name)
        return volume

    def list(self) -> list[Volume]:
        return self._store.all(VOLUME, Volume)

    def mountpoints(self, name: str) -> list[MountPoint]:
        mounts = [self._store.get(MOUNT, key, MountPoint) for key in self._store.ids_by_name(MOUNT, name)]
        return [m for m in mounts if m is not None and m.type == "volume"]

    def inspect(self, name: str) -> VolumeInspect:
        return VolumeInspect(volume=self.get(name), mountpoints=self.mountpoints(name))

    async def remove(self, name: str) -> None:
        """Remove a volume and the mount records that use it.

        Upstream removes a volume even while a running container has it mounted; we refuse
        that (as docker does), since the container would keep writing into a deleted directory.
        """
        self.get(name)
        mounts = self.mountpoints(name)
        running = sorted({m.container_id for m in mounts if self._is_running(m.container_id)})
        if running:
            raise Conflict(f"volume '{name}' is in use by running container(s): {', '.join(running)}")
        with self._store.transaction():
            for m in mounts:
                self._store.delete(MOUNT, mount_key(m.container_id, m.destination))
            self._store.delete(VOLUME, name)
        await self._storage.remove_volume(name)
        log.info("volume removed", extra={"volume": name})
        self._events.publish("volume", "remove", name, name=name)

    async def prune(self) -> list[str]:
        """Remove every volume no container's mount record refers to."""
        removed = []
        for volume in self.list():
            if not self.mountpoints(volume.name):
                await self.remove(volume.name)
                removed.append(volume.name)
        return removed
