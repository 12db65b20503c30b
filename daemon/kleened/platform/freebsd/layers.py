"""`ZfsLayers`: the ZFS driver as core drives storage (`platform.base.LayerStorage` and
`VolumeStorage`), over `ZfsStorage`'s datasets.

What core's words mean here (capabilities `CLONE_AT_CREATE | SNAPSHOT | SEND`):
- a *layer* is a ZFS snapshot holding a whole filesystem, so a stack is used by its top layer
  only: a base image's layer is `<root>/image/<id>@image` (layer id: the image dataset's id,
  sealed by `seal_layer`); a build step's is a snapshot of the build container,
  `<root>/container/<cid>@<12hex>` (layer id: the snapshot's name), which `finish_build` moves
  with the container into `<root>/image/<image id>`, as upstream's `zfs rename`; a stage FROM
  an earlier stage is a clone of that stage's last step, and when the earlier stage's container
  goes, that clone is promoted first (`zfs promote`), taking the steps up to its origin along;
- a *container filesystem* is a clone of the top layer, made at create
  (`create_container_fs(id, layers)`); ZFS mounts it from then on, so mounting and unmounting
  are nothing to do, and a commit (`commit_container_fs`) is a snapshot of it;
- a *volume* is a dataset under `<root>/volumes`.

Core asks for paths and layers without awaiting (`rootfs_path`, `layer_path`, `volume_path`,
`list_layers`), so what ZFS reports is remembered: each dataset's mountpoint (B8: asked, never
guessed from the name) and each layer's snapshot, as they are made here, and all of them at
start-up (`prepare`). A path asked for a dataset never seen is the inherited one under the
root's mountpoint. A step's `layer_path` is the snapshot's read-only view,
`<mountpoint>/.zfs/snapshot/<name>` (not simulated by tests/freebsd_sim).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from pathlib import Path

from kleened.platform.base import UserNamespace
from kleened.platform.posix.sizes import tree_size

from . import zfs
from .storage import ZfsStorage

log = logging.getLogger(__name__)
_STEP = re.compile(r"[0-9a-f]{12}")  # a step snapshot's name (new_id), never `image` nor a zfs-copy leftover


class ZfsLayers:
    """`LayerStorage` + `VolumeStorage` on ZFS; see the module docstring."""

    driver = "zfs"
    capabilities = ZfsStorage.capabilities

    def __init__(self, datasets: ZfsStorage) -> None:
        self.datasets = datasets
        self.layout = datasets.layout
        self._paths: dict[str, Path] = {}  # dataset -> mountpoint, as ZFS reported it
        self._layers: dict[str, str] = {}  # layer id -> its snapshot (`dataset@name`)
        self._root: Path | None = None

    async def prepare(self) -> None:
        """At start-up: the root and its parents (created where missing), then every image,
        container and volume dataset's mountpoint and every layer's snapshot."""
        await self.datasets.prepare()
        self._root = await self.datasets.mountpoint(self.layout.root)
        self._paths.clear()
        found = [*map(self.layout.image, await self.datasets.list_images()),
                 *map(self.layout.container, await self.datasets.list_container_fs()),
                 *map(self.layout.volume, await self.datasets.list_volumes())]
        for dataset in found:
            self._paths[dataset] = await self.datasets.mountpoint(dataset)
        self._layers.clear()
        for snapshot in await self.datasets.all_snapshots():
            layer = self._layer_id(snapshot)
            if layer is not None:
                self._layers[layer] = snapshot

    def _layer_id(self, snapshot: str) -> str | None:
        """The layer a snapshot under the root is: `image/<id>@image` is `<id>`, a step `...@<name>` is `<name>`."""
        dataset, _, name = snapshot.partition("@")
        owner = self.layout.owner(dataset)
        if owner is None:
            return None
        if name == zfs.IMAGE_SNAPSHOT:
            return owner[1] if owner[0] == "image" else None
        return name if _STEP.fullmatch(name) else None

    def _path(self, dataset: str) -> Path:
        found = self._paths.get(dataset)
        if found is not None:
            return found
        if self._root is None:
            raise RuntimeError("ZfsLayers.prepare has not run")
        return self._root / dataset.removeprefix(self.layout.root).lstrip("/")

    def _kind(self, parent: str) -> list[str]:
        return sorted(d.removeprefix(parent + "/") for d in self._paths if d.startswith(parent + "/"))

    # --- layers (snapshots) --------------------------------------------------------------------

    def layer_path(self, layer_id: str) -> Path:
        snapshot = self._layers.get(layer_id, zfs.snapshot(self.layout.image(layer_id), zfs.IMAGE_SNAPSHOT))
        dataset, _, name = snapshot.partition("@")
        if name == zfs.IMAGE_SNAPSHOT:
            return self._path(dataset)
        return self._path(dataset) / ".zfs" / "snapshot" / name

    async def create_layer(self) -> tuple[str, Path]:
        layer_id, path = await self.datasets.create_layer()
        self._paths[self.layout.image(layer_id)] = path
        return layer_id, path

    async def seal_layer(self, layer_id: str) -> None:
        await self.datasets.seal_layer(layer_id)
        self._layers[layer_id] = zfs.snapshot(self.layout.image(layer_id), zfs.IMAGE_SNAPSHOT)

    async def remove_layer(self, layer_id: str) -> None:
        """A base image's dataset goes whole; a step's snapshot goes, and the built image's
        dataset with its last one. Refused by ZFS while a clone depends on it. Idempotent."""
        snapshot = self._layers.get(layer_id)
        dataset, _, name = (snapshot or "").partition("@")
        if snapshot is None or name == zfs.IMAGE_SNAPSHOT:  # a base image's, or one never sealed
            await self.datasets.remove_image(layer_id)
            self._paths.pop(self.layout.image(layer_id), None)
            self._layers.pop(layer_id, None)
            return
        if await self.datasets.exists(dataset):
            await self.datasets.destroy_snapshot(snapshot)
        del self._layers[layer_id]
        owner = self.layout.owner(dataset)
        if owner is not None and owner[0] == "image" and not any(
                s.startswith(dataset + "@") for s in self._layers.values()):
            await self.datasets.destroy_dataset(dataset)
            self._paths.pop(dataset, None)

    def list_layers(self) -> list[str]:
        """Every layer, and every image dataset that holds none (one a crash left unsealed)."""
        holding = {snapshot.partition("@")[0] for snapshot in self._layers.values()}
        unsealed = {i for i in self._kind(self.layout.images) if self.layout.image(i) not in holding}
        return sorted(set(self._layers) | unsealed)

    async def finish_build(self, container_id: str, image_id: str) -> None:
        """The build container's dataset, with its step snapshots (the image's layers), becomes
        `<root>/image/<image_id>` (upstream's `zfs rename -f`); the container has no filesystem
        left to remove."""
        source = self.layout.container(container_id)
        path = await self.datasets.rename_container_fs(container_id, image_id)
        target = self.layout.image(image_id)
        self._paths.pop(source, None)
        self._paths[target] = path
        for layer, snapshot in self._layers.items():
            if snapshot.startswith(source + "@"):
                self._layers[layer] = target + snapshot.removeprefix(source)

    # --- container filesystems (clones) ------------------------------------------------------

    def container_dataset(self, container_id: str) -> str:
        return self.layout.container(container_id)

    async def create_container_fs(self, container_id: str, layers: Sequence[str] = ()) -> None:
        """A clone of the top layer's snapshot (each layer is a whole filesystem)."""
        if not layers:
            raise ValueError("a ZFS container filesystem is a clone of an image: no layer given")
        snapshot = self._layers.get(layers[-1])
        if snapshot is None:
            raise ValueError(f"layer {layers[-1]} is not a snapshot kleened knows")
        path = await self.datasets.clone_container_fs(container_id, snapshot)
        self._paths[self.layout.container(container_id)] = path

    async def mount_container_fs(self, container_id: str, layers: Sequence[str],
                                 userns: UserNamespace | None = None) -> Path:
        """Mounted since create: ZFS mounts a clone as it makes it."""
        if userns is not None:
            raise ValueError("FreeBSD has no user namespaces")
        return self.rootfs_path(container_id)

    async def unmount_container_fs(self, container_id: str) -> None:
        """Nothing: the clone stays mounted until it is destroyed."""

    async def remove_container_fs(self, container_id: str) -> None:
        """The clone and its snapshots. A build stage's container whose last snapshot a later
        stage (or the image that stage became) cloned hands its snapshots up to that one over to
        the clone first (`zfs promote`): those layers live on in the clone's dataset, and the
        container's dataset, now a clone of it, can go."""
        dataset = self.layout.container(container_id)
        handed = await self.datasets.hand_over(dataset)
        if handed is not None:
            heir, moved = handed
            for name in moved:
                if self._layers.get(name) == zfs.snapshot(dataset, name):
                    self._layers[name] = zfs.snapshot(heir, name)
        await self.datasets.remove_container_fs(container_id)
        self._paths.pop(dataset, None)
        for layer in [k for k, v in self._layers.items() if v.startswith(dataset + "@")]:
            del self._layers[layer]

    async def commit_container_fs(self, container_id: str, layer_id: str) -> str:
        """A snapshot of the container (a build step, `commit`) named after the new layer."""
        name = await self.datasets.snapshot_container(container_id, layer_id)
        self._layers[name] = zfs.snapshot(self.layout.container(container_id), name)
        return name

    def rootfs_path(self, container_id: str) -> Path:
        return self._path(self.layout.container(container_id))

    def list_container_fs(self) -> list[str]:
        return self._kind(self.layout.containers)

    def mounted_container_fs(self) -> list[str]:
        return self.list_container_fs()

    async def cleanup(self, keep: Collection[str], running: Collection[str] = ()) -> list[Path]:
        """At start-up (the runtime removed the jails first): every container dataset no record
        owns is destroyed; return their mountpoints."""
        await self.prepare()
        removed = []
        for container_id in self.list_container_fs():
            if container_id in keep:
                continue
            path = self.rootfs_path(container_id)
            try:
                await self.remove_container_fs(container_id)
            except Exception as exc:  # one that cannot go must not stop the others
                log.warning("could not destroy the container dataset %s: %s", container_id, exc)
                continue
            removed.append(path)
        return removed

    # --- volumes ---------------------------------------------------------------------------

    def volume_path(self, name: str) -> Path:
        return self._path(self.layout.volume(name))

    def dataset(self, name: str) -> str:
        return self.layout.volume(name)

    async def create_volume(self, name: str) -> Path:
        zfs.check_volume_name(name)
        path = await self.datasets.create_volume(name)
        self._paths[self.layout.volume(name)] = path
        return path

    async def remove_volume(self, name: str) -> None:
        await self.datasets.remove_volume(name)
        self._paths.pop(self.layout.volume(name), None)

    async def list_volumes(self) -> list[str]:
        return await self.datasets.list_volumes()

    async def populate_volume(self, name: str, source: Path) -> None:
        await self.datasets.populate_volume(name, source)


class ZfsSizes:
    """`DiskSizes` from the datasets' files (what `zfs list -o used` would count, minus
    compression and sharing between clones)."""

    def __init__(self, layers: ZfsLayers) -> None:
        self._layers = layers

    def layer(self, layer_id: str) -> int:
        return tree_size(self._layers.layer_path(layer_id))

    def container(self, container_id: str) -> int:
        return tree_size(self._layers.rootfs_path(container_id))

    def volume(self, name: str) -> int:
        return tree_size(self._layers.volume_path(name))

    def build_cache(self) -> int:
        return 0
