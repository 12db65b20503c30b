"""Resolving a path inside a container root without ever leaving it.

`resolve_in_root(root, path)` follows symlinks the way the container would see them: an
absolute link target restarts at `root`, `..` never climbs above `root`. The result is a host
path that is inside `root` at the moment of the call. Used for mount destinations, COPY
destinations, working directories and reading the image's /etc/passwd.

A container that is running could swap a component for a symlink after we resolved it; callers
that then *write* (mount targets, copies) do so before the container's processes run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_LINKS = 40  # as the kernel's ELOOP limit


class PathEscape(ValueError):
    pass


def resolve_in_root(root: Path, path: str) -> Path:
    return Path(resolve_in_real_root(os.path.realpath(root), path))


def resolve_in_real_root(root: str, path: str) -> str:
    """`resolve_in_root` for a `root` that is already `os.path.realpath`'s answer, on strings:
    what an extraction calls for every entry, without resolving the root again each time."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise PathEscape(f"too many levels of symbolic links in '{path}'")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    result = os.path.join(root, *resolved)
    if not result.startswith(root):
        raise PathEscape(f"'{path}' resolves outside the container root")
    return result


def read_text_in_root(root: Path, path: str, limit: int = 1 << 20) -> str | None:
    """The text of a regular file inside the root, or None when absent or not a file."""
    target = resolve_in_root(root, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def ensure_target(root: Path, path: str, *, directory: bool) -> Path:
    """Create a mount target (a directory, or an empty file for a file bind mount) inside root.

    What is created belongs to the owner of the root directory: root's, except in a container
    whose root is a host uid of a user namespace, which must own its mount targets.
    """
    target = resolve_in_root(root, path)
    owner = os.stat(root)
    if directory:
        _makedirs_in_root(root, target, owner)
    else:
        _makedirs_in_root(root, target.parent, owner)
        if not target.exists():
            fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
            try:
                os.fchown(fd, owner.st_uid, owner.st_gid)
            finally:
                os.close(fd)
    return target


def _makedirs_in_root(root: Path, target: Path, owner: os.stat_result) -> None:
    root = Path(os.path.realpath(root))
    relative = target.relative_to(root)
    current = root
    for part in relative.parts:
        current = current / part
        try:
            os.mkdir(current, 0o755)
            os.chown(current, owner.st_uid, owner.st_gid, follow_symlinks=False)
        except FileExistsError:
            if os.path.islink(current) or not os.path.isdir(current):
                # resolve_in_root already followed links; a link here appeared meanwhile
                raise PathEscape(f"'{current}' changed while creating a mount target") from None
