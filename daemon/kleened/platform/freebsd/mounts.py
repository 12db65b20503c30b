"""nullfs mounts into a jail's root, and the host's mount table, as data.

A *mount* here is a volume's mountpoint or a host path (a bind mount, upstream's "nullfs
mount") shown at a destination inside the container. Upstream built `<root>/<dest>` as text and
used it on the host, so an image symlink `/data -> /etc` put the mount on the host's /etc (B9).
Here the destination is resolved inside the root (`platform.posix.rootpath`: links are followed as the
jail would see them, `..` stops at the root), created there, and the mount goes onto that
resolved, link-free path. It is done before any process of the jail runs, so nothing inside can
swap a component meanwhile.

Unmounting goes deepest first, so a mount nested in another never makes the outer one busy
(B21), and only what `mount -p` lists is unmounted (check-then-act: a stop and the exit
handler may both clean up, as upstream's do).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kleened.platform.posix.rootpath import ensure_target

MOUNTS_ARGV = ["mount", "-p"]


class MountError(ValueError):
    """A mount kleened refuses; `str()` is upstream's message where upstream had one."""


@dataclass(frozen=True)
class Bind:
    """A mount as asked for: resolved by `prepare` only when the mounts before it are in place,
    so a destination inside an earlier mount lands in that mount, as the jail will see it."""

    source: Path  # a host directory or regular file (a volume's mountpoint, or a user's path)
    destination: str  # absolute, inside the container
    read_only: bool = False


@dataclass(frozen=True)
class Nullfs:
    source: Path  # a host directory or regular file
    target: Path  # the resolved destination: a host path inside the jail's root
    read_only: bool = False


def source_kind(source: Path) -> bool:
    """True for a directory, False for a regular file; upstream's messages for anything else."""
    try:
        mode = os.stat(source).st_mode
    except OSError as exc:
        raise MountError(f"error ocurred while determining source type: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        return True
    if stat.S_ISREG(mode):
        return False
    raise MountError("could not determine source type, must be either directory or regular file")


def prepare(root: Path, source: Path, destination: str, *, read_only: bool = False) -> Nullfs:
    """Resolve and create the destination inside `root` (a directory, or an empty file for a file
    source); the result is what `mount_argv` mounts. Raises `MountError` or `PathEscape`."""
    is_dir = source_kind(source)
    target = ensure_target(root, destination, directory=is_dir)
    return Nullfs(source=source, target=target, read_only=read_only)


def mount_argv(mount: Nullfs) -> list[str]:
    return ["mount_nullfs", *(["-o", "ro"] if mount.read_only else []), str(mount.source), str(mount.target)]


def umount_argv(node: Path | str) -> list[str]:
    return ["umount", str(node)]


@dataclass(frozen=True)
class Mounted:
    special: str
    node: str
    fstype: str


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(text: str) -> str:
    """fstab(5) writes spaces and tabs in paths as octal escapes (`\\040`)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mount_p(text: str) -> list[Mounted]:
    """`mount -p` (fstab format: special, node, type, options, dump, pass) -> entries."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append(Mounted(special=_unescape(fields[0]), node=_unescape(fields[1]), fstype=fields[2]))
    return out


OURS = ("nullfs", "devfs")  # what kleened (or jail(8) for it) mounts into a jail's root


def under(mounts: Iterable[Mounted], root: Path | str, types: Sequence[str] = OURS) -> list[Mounted]:
    """Mounts of `types` strictly below `root`, deepest first: the order to unmount them in (B21).
    The root itself is the container's dataset (`mount -p` lists it as zfs): never unmounted here."""
    top = str(root).rstrip("/")
    found = [m for m in mounts if m.node.startswith(top + "/") and m.fstype in types]
    return sorted(found, key=lambda m: (m.node.count("/"), m.node), reverse=True)


def is_mounted(mounts: Sequence[Mounted], node: Path | str, fstype: str | None = None) -> bool:
    return any(m.node == str(node) and (fstype is None or m.fstype == fstype) for m in mounts)
