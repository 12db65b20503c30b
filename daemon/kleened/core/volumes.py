"""Volumes: named directories the daemon owns and mounts into containers.

A volume's identifier is its name (volumes have no id). Mount records (kind "mount") link
containers to volumes and host paths; they live in the store under the mount's source so a
volume's users are one indexed query away.
"""

from __future__ import annotations

import logging

from kleene_protocol.models import MountPoint, Volume, VolumeInspect
from kleene_protocol.names import name_error

from .. import faults
from ..platform.base import VolumeStorage
from .clock import now_iso
from .errors import Conflict, InvalidArgument, NotFound
from .events import Events
from .lifecycle import Locks
from .store import Store

log = logging.getLogger(__name__)

VOLUME = "volume"
MOUNT = "mount"
NO_SUCH_VOLUME = "No such volume"


def mount_key(container_id: str, destination: str) -> str:
    return f"{container_id}:{destination}"


class Volumes:
    """Volumes, each changed under its lock (`lifecycle.Locks`, key ("volume", name)).

    A container that mounts a volume holds a mount record for it from its creation to its
    removal; a volume with mount records cannot be removed. Container creation takes the
    volume's lock while it makes or checks the volume and writes its mount records, so a
    removal can never slip between the two.
    """

    def __init__(self, store: Store, storage: VolumeStorage, *, events: Events | None = None,
                 locks: Locks | None = None) -> None:
        self._store = store
        self._storage = storage
        self._events = events if events is not None else Events()
        self._locks = locks if locks is not None else Locks()

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
        if error := name_error("volume", name):
            raise InvalidArgument(error)
        async with self._locks.hold(("volume", name)):
            return await self.create_held(name)

    async def create_held(self, name: str) -> Volume:
        """`create`, for a caller that holds the volume's lock."""
        existing = self._store.get(VOLUME, name, Volume)
        if existing is not None:
            return existing
        if error := name_error("volume", name):
            raise InvalidArgument(error)
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
        """Remove a volume no container uses.

        Upstream removes a volume even while a running container has it mounted; we refuse while
        any container (running or not) mounts it, as docker does: the container would otherwise
        write into a deleted directory, or find its data gone at its next start.
        """
        async with self._locks.hold(("volume", name)):
            self.get(name)
            users = sorted({m.container_id for m in self.mountpoints(name)})
            if users:
                raise Conflict(f"volume '{name}' is in use by container(s): {', '.join(users)}")
            await self._remove_held(name)

    async def _remove_held(self, name: str) -> None:
        self._store.delete(VOLUME, name)
        faults.point("volume.remove.forgotten")
        await self._storage.remove_volume(name)
        log.info("volume removed", extra={"volume": name})
        self._events.publish("volume", "remove", name, name=name)

    async def prune(self) -> list[str]:
        """Remove every volume no container mounts, oldest first (upstream's order)."""
        removed = []
        for volume in self._store.all(VOLUME, Volume, order="created ASC"):
            async with self._locks.hold(("volume", volume.name)):
                if not self._store.exists(VOLUME, volume.name) or self.mountpoints(volume.name):
                    continue
                await self._remove_held(volume.name)
            removed.append(volume.name)
        return removed
