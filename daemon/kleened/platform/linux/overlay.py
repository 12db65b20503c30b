"""Layers, container filesystems and volumes as plain directories plus overlayfs mounts.

Layout under the state root (vocabulary of `platform.base`):

    layers/<layer-id>/                  a layer's content; read-only once an image uses it
    containers/<id>/upper|work|rootfs   the container's writable layer, overlay's work dir, the mount
    volumes/<name>/                     a volume
    init/                               the "init layer": the top lower of every container (below)

Why overlay: creating and committing are O(1) (a commit renames the container's upper dir into
`layers/`), it works on the ext4 host, and it needs no extra packages. Deletions of layers,
container dirs and volumes look like whiteouts (char device 0/0) in the upper dir; they keep
that meaning when the upper becomes a layer, so an image is just its ordered list of layer dirs.

The init layer holds empty placeholders for what the runtime bind-mounts over (`/.init`, the
tini binary). Without it runc would create them in the container's upper dir, and every commit
(every build step) would carry them into the image; Docker keeps a per-container init layer for
the same reason. It also gives an empty layer stack the one lower dir overlay requires.

Rules this module keeps:
- mount data is limited to one page, so lower dirs are given relative to `layers/` (`mount` runs
  with that cwd): about 300 twelve-character ids fit, beyond the kernel's stack limit of 500;
- nothing is deleted through a live mount: `remove_*` consults /proc/self/mountinfo, unmounts
  first, and renames the victim to a `.trash-*` name before deleting it, so a crash mid-delete
  leaves no half-present object;
- new objects are built under a `.tmp-*` name and renamed into place; dot names never count
  as objects, and the daemon's reconcile can delete them.

User namespaces (`idmap.py`): the overlay of such a container is mounted on idmapped views of
`layers/`, `init/` and the container's dir, attached under `containers/<id>/.idmap/` only while
`mount` runs (overlay keeps its own references to its layers). The container's root, a host
uid of its range, must be able to reach its rootfs: the state root and `containers/` get the
range's first gid as group with search permission only (0710), as Docker does for
userns-remap, and the container's dir search permission for all (0711: only that group reaches
it). No view shows a dir of that group: through a view its gid is unmapped, and host root
would lose its right to enter it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path

import trio

from kleene_protocol.ids import new_id
from kleened import faults
from kleened.platform.base import Capability, HostCommandError, UserNamespace
from kleened.platform.linux import idmap, mountinfo
from kleened.platform.linux.bundle import INIT_DESTINATION
from kleened.platform.posix import hostcmd

log = logging.getLogger(__name__)

# Mountpoints the runtime binds over, relative to "/" (see the module docstring).
INIT_LAYER_FILES = (INIT_DESTINATION.lstrip("/"),)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # no ',', ':', '=' or '/' (mount data)
IDMAP_VIEW = ".idmap"  # under a container's dir: idmapped views of its layers while its overlay is mounted


def _check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid {kind} '{name}'")
    return name


def check_volume_name(name: str) -> str:
    """Volume names become one path component; refuse anything that could escape or hide."""
    if not name:
        raise ValueError("volume name must not be empty")
    if "/" in name or "\0" in name:
        raise ValueError(f"volume name '{name}' must not contain '/' or NUL")
    if name.startswith("."):
        raise ValueError(f"volume name '{name}' must not start with '.'")
    if len(name.encode()) > 255:
        raise ValueError("volume name is longer than 255 bytes")
    return name


def _busy(what: str) -> OSError:
    return OSError(errno.EBUSY, what)


class OverlayStorage:
    """`LayerStorage` and `VolumeStorage` on overlayfs; see the module docstring for the layout."""

    driver = "overlay"
    capabilities = Capability.NONE  # layers are composed at mount; no snapshots, no dataset send

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()  # mountinfo shows real paths
        self.layers = self.root / "layers"
        self.containers = self.root / "containers"
        self.volumes = self.root / "volumes"
        self.init_layer = self.root / "init"
        for d in (self.layers, self.containers, self.volumes):
            d.mkdir(mode=0o700, exist_ok=True)
        self._make_init_layer()
        self._userns_fds = idmap.UsernsFds()

    def _make_init_layer(self) -> None:
        self.init_layer.mkdir(mode=0o755, exist_ok=True)
        for name in INIT_LAYER_FILES:
            placeholder = self.init_layer / name
            if not placeholder.is_file():
                placeholder.touch(mode=0o755)

    # --- layers -----------------------------------------------------------------------------

    def layer_path(self, layer_id: str) -> Path:
        return self.layers / _check_name("layer id", layer_id)

    async def create_layer(self) -> tuple[str, Path]:
        layer_id = new_id()
        path = self.layer_path(layer_id)
        tmp = self.layers / f".tmp-{layer_id}"
        tmp.mkdir(mode=0o755)
        os.chmod(tmp, 0o755)  # the root dir's mode becomes the container's "/" mode
        tmp.rename(path)
        return layer_id, path

    async def remove_layer(self, layer_id: str) -> None:
        """Idempotent. Refuses (EBUSY) while a mounted container filesystem stacks the layer."""
        path = self.layer_path(layer_id)
        if not path.exists():
            return
        users = [cid for cid, lowers in self._mounted_stacks().items() if layer_id in lowers]
        if users:
            raise _busy(f"layer {layer_id} is in use by mounted container {', '.join(sorted(users))}")
        await self._delete_tree(path)

    def list_layers(self) -> list[str]:
        return self._names(self.layers)

    # --- container filesystems --------------------------------------------------------------

    def _container_dir(self, container_id: str) -> Path:
        return self.containers / _check_name("container id", container_id)

    def rootfs_path(self, container_id: str) -> Path:
        return self._container_dir(container_id) / "rootfs"

    async def seal_layer(self, layer_id: str) -> None:
        """Nothing to do: a filled layer directory is usable as it is."""

    async def create_container_fs(self, container_id: str, layers: Sequence[str] = ()) -> None:
        """An empty writable layer; `layers` are composed at mount."""
        target = self._container_dir(container_id)
        if target.exists():
            raise FileExistsError(errno.EEXIST, f"container filesystem {container_id} already exists")
        tmp = self.containers / f".tmp-{container_id}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o700)
            for sub in ("upper", "work", "rootfs"):
                (tmp / sub).mkdir(mode=0o755)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # only fresh empty dirs: never a mountpoint
            raise

    async def finish_build(self, container_id: str, image_id: str) -> None:
        """Nothing: committed layers are directories of their own, whatever becomes of the container."""

    async def mount_container_fs(self, container_id: str, layers: Sequence[str],
                                 userns: UserNamespace | None = None) -> Path:
        """Mount `layers` (bottom first) under the container's upper dir. Already mounted: no-op.

        With `userns`, on an idmapped view of the state root (see the module docstring).
        """
        cdir = self._container_dir(container_id)
        rootfs = cdir / "rootfs"
        for layer_id in layers:
            if not self.layer_path(layer_id).is_dir():
                raise FileNotFoundError(errno.ENOENT, f"layer {layer_id} does not exist")
        if not cdir.is_dir():
            raise FileNotFoundError(errno.ENOENT, f"container filesystem {container_id} does not exist")
        if mountinfo.is_mountpoint(rootfs):
            return rootfs
        argv = ["mount", "-t", "overlay", "overlay", "-o", self._mount_data(container_id, layers), rootfs]
        if userns is None:
            await hostcmd.run(argv, cwd=self.layers)
            return rootfs
        view = cdir / IDMAP_VIEW
        await self._drop_view(view)  # a crash may have left one
        self._grant_search(userns.gid_base, cdir)
        view.mkdir(mode=0o700)
        try:
            fd = self._userns_fds.get(userns)
            for name, source in (("layers", self.layers), ("init", self.init_layer), ("self", cdir)):
                (view / name).mkdir()
                idmap.bind(source, view / name, fd)
            data = f"lowerdir={':'.join(['../init', *reversed(layers)])},upperdir=../self/upper,workdir=../self/work"
            await hostcmd.run(["mount", "-t", "overlay", "overlay", "-o", data, rootfs], cwd=view / "layers")
        finally:
            with trio.CancelScope(shield=True):
                await self._drop_view(view)
        return rootfs

    @staticmethod
    async def _drop_view(view: Path) -> None:
        if not view.exists():
            return
        for m in reversed(mountinfo.mounts_under(view)):
            await hostcmd.run(["umount", m.mountpoint])
        for entry in view.iterdir():
            entry.rmdir()
        view.rmdir()

    def _grant_search(self, gid: int, cdir: Path) -> None:
        """Let the container's root (group `gid`) reach `cdir`; see the module docstring."""
        for d, mode in ((self.root, 0o710), (self.containers, 0o710), (cdir, 0o711)):
            st = d.stat()
            group = gid if mode == 0o710 else st.st_gid
            if st.st_gid != group or st.st_mode & 0o777 != mode:
                os.chown(d, -1, group)
                os.chmod(d, mode)

    def _mount_data(self, container_id: str, layers: Sequence[str]) -> str:
        """overlay's options, relative to `layers/`; the top layer comes first in lowerdir."""
        lower = ":".join(["../init", *reversed(layers)])
        rel = f"../containers/{container_id}"
        return f"lowerdir={lower},upperdir={rel}/upper,workdir={rel}/work"

    async def unmount_container_fs(self, container_id: str) -> None:
        rootfs = self.rootfs_path(container_id)
        if mountinfo.is_mountpoint(rootfs):
            await hostcmd.run(["umount", rootfs])

    async def remove_container_fs(self, container_id: str) -> None:
        """Idempotent: unmount everything under the container dir, then delete it."""
        cdir = self._container_dir(container_id)
        if not cdir.exists():
            return
        await self._delete_tree(cdir)

    async def commit_container_fs(self, container_id: str, layer_id: str) -> str:
        cdir, layer = self._container_dir(container_id), self.layer_path(layer_id)
        if mountinfo.is_mountpoint(cdir / "rootfs"):
            raise _busy(f"container filesystem {container_id} is mounted; unmount it before committing")
        fresh = cdir / f".tmp-upper-{layer_id}"
        fresh.mkdir(mode=0o755)
        os.chmod(fresh, (cdir / "upper").stat().st_mode & 0o7777)  # keep "/" as it was
        # Order matters for a crash: the layer appears first, then the fresh upper; a leftover
        # .tmp-upper-* is empty: `cleanup` makes it the upper when the crash came between the two.
        (cdir / "upper").rename(layer)
        faults.point("storage.commit.moved")
        fresh.rename(cdir / "upper")
        return layer_id

    def list_container_fs(self) -> list[str]:
        return self._names(self.containers)

    def mounted_container_fs(self) -> list[str]:
        return sorted(self._mounted_stacks())

    def _mounted_stacks(self) -> dict[str, list[str]]:
        """container id -> its lower layer ids, for every overlay mounted at containers/<id>/rootfs."""
        stacks = {}
        for m in mountinfo.mounts():
            if m.mountpoint.name == "rootfs" and m.mountpoint.parent.parent == self.containers:
                lower = m.option("lowerdir") or ""
                stacks[m.mountpoint.parent.name] = [Path(p).name for p in lower.split(":") if p]
        return stacks

    # --- volumes ----------------------------------------------------------------------------

    def volume_path(self, name: str) -> Path:
        return self.volumes / check_volume_name(name)

    def dataset(self, name: str) -> str:
        return str(self.volume_path(name))

    def container_dataset(self, container_id: str) -> str:
        return str(self.containers / container_id)

    async def create_volume(self, name: str) -> Path:
        """Idempotent: an existing volume is returned as it is."""
        path = self.volume_path(name)
        if path.is_dir():
            return path
        tmp = self.volumes / f".tmp-{secrets.token_hex(6)}"
        tmp.mkdir(mode=0o755)
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(path)
        except OSError:
            tmp.rmdir()
            if not path.is_dir():  # lost a race with a concurrent create: theirs is fine
                raise
        return path

    async def populate_volume(self, name: str, source: Path) -> None:
        """Copy the contents of `source` into the volume, keeping owners, modes and links.

        `source` must already be resolved inside the container root (core does that); it is
        refused if it is itself a symlink. `cp -a` never follows symlinks inside the tree.
        """
        path = self.volume_path(name)
        if source.is_symlink() or not source.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"cannot populate volume {name} from {source}: not a directory")
        await hostcmd.run(["cp", "-a", "--", f"{source}/.", f"{path}/"], timeout=600)

    async def remove_volume(self, name: str) -> None:
        path = self.volume_path(name)
        if path.exists():
            await self._delete_tree(path)

    async def list_volumes(self) -> list[str]:
        return self._names(self.volumes)

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _names(directory: Path) -> list[str]:
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".") and p.is_dir())

    async def _delete_tree(self, path: Path) -> None:
        """Unmount whatever is mounted at or under `path`, move it aside, then delete it."""
        for m in mountinfo.mounts_under(path):
            await hostcmd.run(["umount", m.mountpoint])
        if mountinfo.mounts_under(path):  # something was mounted again meanwhile: never delete through it
            raise _busy(f"{path} still has mounts below it")
        trash = path.parent / f".trash-{path.name}-{secrets.token_hex(4)}"
        path.rename(trash)
        await trio.to_thread.run_sync(shutil.rmtree, trash)

    async def cleanup(self, keep: Collection[str], running: Collection[str] = ()) -> list[Path]:
        """At start-up: unmount everything under the container dirs but the filesystems of
        `running` (adopted containers), delete container dirs whose id is not in `keep` and
        every `.tmp-*`/`.trash-*` leftover of a crash; return what was deleted. Logs (never
        raises for) one entry that cannot go, and skips what it does not recognise."""
        spared = {(self.containers / c).resolve() for c in running}
        mounted = sorted((m.mountpoint for m in mountinfo.mounts_under(self.containers)
                          if not spared.intersection(m.mountpoint.parents)),
                         key=lambda p: -len(p.parts))  # deepest first, many per umount call
        for batch in (mounted[i:i + 64] for i in range(0, len(mounted), 64)):
            try:
                await hostcmd.run(["umount", *batch])
            except HostCommandError as e:
                log.warning("could not unmount everything under %s: %s", self.containers, e)
        removed = []
        for parent in (self.layers, self.containers, self.volumes):
            for p in parent.iterdir():
                garbage = p.name.startswith((".tmp-", ".trash-"))
                orphan = parent == self.containers and not garbage and p.name not in keep
                if orphan and not _NAME.fullmatch(p.name):
                    log.warning("leaving %s: not a container directory", p)
                    continue
                if garbage or orphan:
                    removed += await self._delete_quietly(p)
                elif parent == self.containers and p.name not in running:
                    self._restore_upper(p)
                    for leftover in [*p.glob(".tmp-upper-*"), *p.glob(IDMAP_VIEW)]:
                        removed += await self._delete_quietly(leftover)
        return removed

    @staticmethod
    def _restore_upper(cdir: Path) -> None:
        """A commit killed between its two renames left the container without an upper dir and
        its fresh, empty one as `.tmp-upper-<layer>`: that one becomes the upper."""
        upper = cdir / "upper"
        if upper.exists():
            return
        fresh = sorted(cdir.glob(".tmp-upper-*"))
        try:
            if fresh:
                fresh[0].rename(upper)
            else:
                upper.mkdir(mode=0o755)
        except OSError as e:
            log.warning("could not give the container %s a writable layer again: %s", cdir.name, e)

    async def _delete_quietly(self, path: Path) -> list[Path]:
        try:
            await self._delete_tree(path)
        except (OSError, HostCommandError) as e:
            log.warning("could not delete %s: %s", path, e)
            return []
        return [path]
