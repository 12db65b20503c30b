"""`ZfsStorage`: images, container filesystems and volumes as ZFS datasets (zfs.py has the layout).

How it differs from the overlay driver's shape (`platform.base.LayerStorage`), and why (the
`capabilities` it declares: CLONE_AT_CREATE, SNAPSHOT, SEND):
- a container filesystem is a *clone of an image snapshot made at container create*
  (`create_container_fs(id, image, snapshot)`), not a stack composed at mount time: ZFS mounts it
  as it clones it, and there is nothing to mount or unmount at start and stop;
- a build step is a *snapshot of the build container* (`snapshot_container`), and the finished
  build is that container renamed into the image's place (`commit_build`), step snapshots
  included, so `FROM image@snap` clones them;
- a base image's dataset is created empty (`create_layer`), filled, then sealed with `@image`
  (`seal_layer`): only a sealed image can be cloned.

Every operation is one or two `zfs` commands; every name is checked (zfs.py). Failures roll back
what they made (a dataset made before a failure is destroyed, B11) and image removal cleans
the snapshots zfs-copy and zfs-clone made on their source (B13).
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from kleene_protocol.ids import new_id
from kleened.platform.base import Capability, HostCommandError
from kleened.platform.posix.rootfs import copy_tree

from . import zfs
from .command import LONG_TIMEOUT, Commands

log = logging.getLogger(__name__)
_UNDO_TIMEOUT = 60.0  # seconds for a shielded rollback


class ZfsStorage:
    """Datasets under `root` (the `kleene_root` config key); see the module docstring."""

    driver = "zfs"
    capabilities = Capability.CLONE_AT_CREATE | Capability.SNAPSHOT | Capability.SEND

    def __init__(self, commands: Commands, root: str) -> None:
        self.commands = commands
        self.layout = zfs.Layout(root)

    # --- datasets ------------------------------------------------------------------------------

    async def exists(self, dataset: str) -> bool:
        return await self.commands.succeeds(zfs.get_argv(dataset, "name"))

    async def mountpoint(self, dataset: str) -> Path:
        """Where `dataset` is mounted, as ZFS says (B8); `none`/`legacy` refused (B24)."""
        return zfs.parse_mountpoint(dataset, await self.commands.run(zfs.get_argv(dataset, "mountpoint")))

    async def prepare(self, *, dry_run: bool = False) -> list[str]:
        """Create the root and its three parents where missing (`init`); return what was (or,
        with `dry_run`, would be) created. Dry run changes nothing (B24)."""
        made = []
        for dataset in self.layout.parents():
            if not await self.exists(dataset):
                made.append(dataset)
                if not dry_run:
                    await self.commands.run(zfs.create_argv(dataset))
        if not dry_run:
            await self.mountpoint(self.layout.root)
        return made

    async def _children(self, parent: str) -> list[str]:
        return zfs.parse_children(parent, await self.commands.run(zfs.children_argv(parent)))

    async def _clones(self, dataset: str) -> dict[str, list[str]]:
        return zfs.parse_clones(await self.commands.run(zfs.snapshots_argv(dataset)))

    async def _destroy_quietly(self, target: str, *, recursive: bool = False) -> None:
        """Shielded rollback of something this driver just made; a failure is logged as a leak."""
        with trio.CancelScope(shield=True), trio.move_on_after(_UNDO_TIMEOUT):
            try:
                await self.commands.run(zfs.destroy_argv(target, recursive=recursive, force=True))
            except HostCommandError as exc:
                log.warning("could not roll back %s, it leaked: %s", target, exc)

    # --- images ------------------------------------------------------------------------------

    async def create_layer(self) -> tuple[str, Path]:
        """An empty image dataset to fill (fetch, fetch-auto); not usable before `seal_layer`."""
        image_id = new_id()
        dataset = self.layout.image(image_id)
        await self.commands.run(zfs.create_argv(dataset))
        try:
            return image_id, await self.mountpoint(dataset)
        except BaseException:
            await self._destroy_quietly(dataset, recursive=True)
            raise

    async def seal_layer(self, image_id: str) -> None:
        """Take `@image`, the snapshot containers clone."""
        await self.commands.run(zfs.snapshot_argv(self.layout.image(image_id), zfs.IMAGE_SNAPSHOT))

    async def remove_layer(self, image_id: str) -> None:
        await self.remove_image(image_id)

    async def copy_dataset(self, source: str, image_id: str) -> Path:
        """zfs-copy: `zfs send src@<id> | zfs receive image/<id>` (two processes, B10), then both
        `@<id>` snapshots are destroyed (B13). Not sealed: the caller adds files, then seals."""
        origin = zfs.snapshot(await self._source(source), image_id)
        target = self.layout.image(image_id)
        await self.commands.run(zfs.snapshot_argv(source, image_id))
        try:
            await self.commands.pipe(zfs.send_argv(origin), zfs.receive_argv(target), timeout=LONG_TIMEOUT)
            await self.commands.run(zfs.destroy_argv(zfs.snapshot(target, image_id)))
            return await self.mountpoint(target)
        except BaseException:
            await self._destroy_quietly(target, recursive=True)
            raise
        finally:
            await self._destroy_quietly(origin)

    async def clone_dataset(self, source: str, image_id: str) -> Path:
        """zfs-clone: `zfs clone src@<id> image/<id>`. The origin snapshot lives as long as the
        image does; `remove_image` destroys it (B13)."""
        origin = zfs.snapshot(await self._source(source), image_id)
        target = self.layout.image(image_id)
        await self.commands.run(zfs.snapshot_argv(source, image_id))
        try:
            await self.commands.run(zfs.clone_argv(origin, target))
            return await self.mountpoint(target)
        except BaseException:
            await self._destroy_quietly(target, recursive=True)
            await self._destroy_quietly(origin)
            raise

    async def _source(self, source: str) -> str:
        """A zfs-copy/zfs-clone source: an existing dataset name (a path is not one)."""
        zfs.check_dataset(source)
        if not await self.exists(source):
            raise zfs.DatasetError("invalid dataset")
        return source

    async def image_dependents(self, image_id: str) -> tuple[list[str], list[str]]:
        """(container ids, image ids) cloned from the image's snapshots."""
        dataset = self.layout.image(image_id)
        return zfs.dependents(self.layout, dataset, await self._clones(dataset))

    async def remove_image(self, image_id: str) -> None:
        """Refuse while clones depend on it (upstream's message), else destroy it with its
        snapshots, then a zfs-clone origin snapshot left on the source (B13). Idempotent."""
        dataset = self.layout.image(image_id)
        if not await self.exists(dataset):
            return
        containers, images = await self.image_dependents(image_id)
        if containers or images:
            raise zfs.DatasetError(zfs.in_use_message(image_id, containers, images))
        origin = (await self.commands.run(zfs.get_argv(dataset, "origin"))).strip()
        await self.commands.run(zfs.destroy_argv(dataset, recursive=True))
        if origin.endswith(f"@{image_id}"):
            await self.commands.run(zfs.destroy_argv(origin))

    async def list_images(self) -> list[str]:
        return await self._children(self.layout.images)

    async def snapshots(self, image_id: str) -> list[str]:
        """The image's snapshot names in creation order (`image` and the build steps)."""
        dataset = self.layout.image(image_id)
        return zfs.snapshot_names(dataset, await self._clones(dataset))

    # --- containers ------------------------------------------------------------------------------

    async def create_container_fs(self, container_id: str, image_id: str, snapshot: str = zfs.IMAGE_SNAPSHOT) -> Path:
        """Clone `image@snapshot` as the container's filesystem; return its mountpoint."""
        return await self.clone_container_fs(container_id, zfs.snapshot(self.layout.image(image_id), snapshot))

    async def clone_container_fs(self, container_id: str, origin: str) -> Path:
        """Clone the snapshot `origin` (an image's, or a build step's) as the container's filesystem."""
        target = self.layout.container(container_id)
        await self.commands.run(zfs.clone_argv(origin, target))
        try:
            return await self.mountpoint(target)
        except BaseException:
            await self._destroy_quietly(target, recursive=True)
            raise

    async def rootfs(self, container_id: str) -> Path:
        return await self.mountpoint(self.layout.container(container_id))

    async def snapshot_container(self, container_id: str, name: str) -> str:
        """A build step: snapshot the build container as `name` (a layer id); return it."""
        await self.commands.run(zfs.snapshot_argv(self.layout.container(container_id), name))
        return name

    async def all_snapshots(self) -> dict[str, list[str]]:
        """Every snapshot under the root -> the datasets cloned from it."""
        return await self._clones(self.layout.root)

    async def destroy_snapshot(self, snapshot: str) -> None:
        """Refused by ZFS while a clone depends on it."""
        await self.commands.run(zfs.destroy_argv(snapshot))

    async def destroy_dataset(self, dataset: str) -> None:
        """A dataset with no snapshots left (a built image whose layers all went)."""
        if await self.exists(dataset):
            await self.commands.run(zfs.destroy_argv(dataset))

    async def rename_container_fs(self, container_id: str, image_id: str) -> Path:
        """The build container's dataset, its step snapshots included, becomes `image/<image_id>`."""
        target = self.layout.image(image_id)
        await self.commands.run(zfs.rename_argv(self.layout.container(container_id), target))
        return await self.mountpoint(target)

    async def commit_build(self, container_id: str, image_id: str) -> Path:
        """The finished (stopped, unmounted) build container becomes `image/<image_id>@image`."""
        path = await self.rename_container_fs(container_id, image_id)
        await self.seal_layer(image_id)
        return path

    async def hand_over(self, dataset: str) -> tuple[str, list[str]] | None:
        """Before `dataset` is destroyed: promote the clone that depends on it (a later build
        stage, or the image it became), so that its snapshots up to that clone's origin move to
        the clone. Return (the clone, the moved snapshot names), or None when nothing depends on it."""
        if not await self.exists(dataset):
            return None
        clones = await self._clones(dataset)
        heir = zfs.heir(dataset, clones)
        if heir is None:
            return None
        before = zfs.snapshot_names(heir, clones)
        await self.commands.run(zfs.promote_argv(heir))
        moved = [n for n in zfs.snapshot_names(heir, await self._clones(heir)) if n not in before]
        return heir, moved

    async def remove_container_fs(self, container_id: str) -> None:
        """Destroy the clone and its snapshots (idempotent). Nothing may be mounted in it, and
        nothing may be cloned from it (`hand_over` first)."""
        dataset = self.layout.container(container_id)
        if await self.exists(dataset):
            await self.commands.run(zfs.destroy_argv(dataset, recursive=True, force=True))

    async def list_container_fs(self) -> list[str]:
        return await self._children(self.layout.containers)

    # --- volumes -------------------------------------------------------------------------------

    def dataset(self, name: str) -> str:
        return self.layout.volume(name)

    def container_dataset(self, container_id: str) -> str:
        return self.layout.container(container_id)

    async def create_volume(self, name: str) -> Path:
        """Idempotent by name, as upstream; the mountpoint comes from ZFS (B8)."""
        dataset = self.layout.volume(name)
        if not await self.exists(dataset):
            try:
                await self.commands.run(zfs.create_argv(dataset))
            except HostCommandError:
                if not await self.exists(dataset):  # not a concurrent create of the same name
                    raise
        return await self.mountpoint(dataset)

    async def populate_volume(self, name: str, source: Path) -> None:
        """Copy `source` (resolved inside a container root by the caller) into the empty volume,
        dotfiles and links included, in Python (upstream ran `sh -c "cp -a src/* dst"`, B10)."""
        if source.is_symlink() or not source.is_dir():
            raise NotADirectoryError(f"cannot populate volume {name} from {source}: not a directory")
        path = await self.mountpoint(self.layout.volume(name))
        await trio.to_thread.run_sync(lambda: copy_tree(source, path))

    async def remove_volume(self, name: str) -> None:
        """`zfs destroy` without -r: a volume with snapshots or children is refused by ZFS."""
        dataset = self.layout.volume(name)
        if await self.exists(dataset):
            await self.commands.run(zfs.destroy_argv(dataset))

    async def list_volumes(self) -> list[str]:
        return await self._children(self.layout.volumes)
