"""`ZfsLayers`: the ZFS driver as core drives storage (`platform.base.LayerStorage` and
`VolumeStorage`), over `ZfsStorage`'s datasets.

What core's words mean here (capabilities `CLONE_AT_CREATE | SNAPSHOT | SEND`):
- a *layer* is an image dataset, `<root>/image/<layer id>`; `seal_layer` takes its `@image`
  snapshot, and an image record stacks exactly one;
- a *container filesystem* is a clone of the top layer's `@image`, made at create
  (`create_container_fs(id, layers)`); it is mounted by ZFS from then on, so mounting and
  unmounting are nothing to do;
- a *volume* is a dataset under `<root>/volumes`.

Core asks for paths without awaiting (`rootfs_path`, `layer_path`, `volume_path`), so every
mountpoint ZFS reports (B8: asked, never guessed from the name) is remembered: when a dataset is
made here, and for every existing one at start-up (`prepare`). A path asked for a dataset that
was never seen is the inherited one under the root's mountpoint.

Not here yet: commits and build steps as snapshots (`commit_container_fs` refuses: docs/freebsd.md
"Phase 2: what is left").
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from kleened.platform.base import UserNamespace
from kleened.platform.posix.sizes import tree_size

from . import zfs
from .storage import ZfsStorage

log = logging.getLogger(__name__)


class ZfsLayers:
    """`LayerStorage` + `VolumeStorage` on ZFS; see the module docstring."""

    driver = "zfs"
    capabilities = ZfsStorage.capabilities

    def __init__(self, datasets: ZfsStorage) -> None:
        self.datasets = datasets
        self.layout = datasets.layout
        self._paths: dict[str, Path] = {}  # dataset -> mountpoint, as ZFS reported it
        self._root: Path | None = None

    async def prepare(self) -> None:
        """At start-up: the root and its parents (created where missing), then every image,
        container and volume dataset's mountpoint."""
        await self.datasets.prepare()
        self._root = await self.datasets.mountpoint(self.layout.root)
        self._paths.clear()
        found = [*map(self.layout.image, await self.datasets.list_images()),
                 *map(self.layout.container, await self.datasets.list_container_fs()),
                 *map(self.layout.volume, await self.datasets.list_volumes())]
        for dataset in found:
            self._paths[dataset] = await self.datasets.mountpoint(dataset)

    def _path(self, dataset: str) -> Path:
        found = self._paths.get(dataset)
        if found is not None:
            return found
        if self._root is None:
            raise RuntimeError("ZfsLayers.prepare has not run")
        return self._root / dataset.removeprefix(self.layout.root).lstrip("/")

    def _kind(self, parent: str) -> list[str]:
        return sorted(d.removeprefix(parent + "/") for d in self._paths if d.startswith(parent + "/"))

    # --- layers (image datasets) -------------------------------------------------------------

    def layer_path(self, layer_id: str) -> Path:
        return self._path(self.layout.image(layer_id))

    async def create_layer(self) -> tuple[str, Path]:
        layer_id, path = await self.datasets.create_layer()
        self._paths[self.layout.image(layer_id)] = path
        return layer_id, path

    async def seal_layer(self, layer_id: str) -> None:
        await self.datasets.seal_layer(layer_id)

    async def remove_layer(self, layer_id: str) -> None:
        """Refused by ZFS's own rule while a clone depends on it (`ZfsStorage.remove_image`)."""
        await self.datasets.remove_image(layer_id)
        self._paths.pop(self.layout.image(layer_id), None)

    def list_layers(self) -> list[str]:
        return self._kind(self.layout.images)

    # --- container filesystems (clones) ------------------------------------------------------

    def container_dataset(self, container_id: str) -> str:
        return self.layout.container(container_id)

    async def create_container_fs(self, container_id: str, layers: Sequence[str] = ()) -> None:
        if len(layers) != 1:
            raise ValueError(f"a ZFS container is a clone of one image dataset, not of {len(layers)} layers")
        path = await self.datasets.create_container_fs(container_id, layers[0])
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
        await self.datasets.remove_container_fs(container_id)
        self._paths.pop(self.layout.container(container_id), None)

    async def commit_container_fs(self, container_id: str) -> str:
        raise ValueError("commit and build steps are not wired to ZFS snapshots yet (docs/freebsd.md)")

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
