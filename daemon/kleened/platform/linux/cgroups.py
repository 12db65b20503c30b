"""Where runc puts a container's cgroups, so the daemon can count its processes and remove the
`<prefix>` parent dirs that `runc delete` leaves behind.

runc resolves a *relative* `cgroupsPath` against the caller's own cgroup: on cgroup v1 (and the
unified hierarchy of a hybrid host) it nests under our own path in each hierarchy, on a pure v2
host under the *parent* of our own cgroup (ours holds processes, so it cannot have controllers
enabled for children). We look in both places; `rmdir` only ever removes empty dirs, so trying
a path that is not ours is harmless.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Collection
from pathlib import Path

from kleened.platform.linux import mountinfo


def _own_cgroups() -> dict[str, str]:
    """hierarchy key ("memory", "cpu,cpuacct", "name=systemd", "" for v2) -> our path in it."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    return own


def _hierarchies() -> list[tuple[Path, str, str, frozenset[str]]]:
    """(mountpoint, mount root, our path, controllers) for each cgroup hierarchy we belong to;
    the unified (v2) hierarchy has the empty controller set."""
    own = _own_cgroups()
    found = []
    for m in mountinfo.of_types("cgroup", "cgroup2"):
        if m.fstype == "cgroup2" and "" in own:
            found.append((m.mountpoint, m.root, own[""], frozenset()))
        elif m.fstype == "cgroup":
            options = set(m.super_options.split(","))
            for key, path in own.items():
                if key and set(key.split(",")) <= options:
                    found.append((m.mountpoint, m.root, path, frozenset(key.split(","))))
                    break
    return found


def _dirs(relative: str) -> list[tuple[str, Path, frozenset[str]]]:
    dirs: list[tuple[str, Path, frozenset[str]]] = []
    for mountpoint, root, own, controllers in _hierarchies():
        bases = [own, posixpath.dirname(own)]  # v1/hybrid nest under ours; pure v2 under our parent
        for base in bases:
            inner = posixpath.relpath(posixpath.join(base, relative), root)
            if inner.startswith(".."):
                continue  # outside what this mount shows (a cgroup namespace)
            path = mountpoint / inner
            if all(path != d for _, d, _ in dirs):
                dirs.append((str(mountpoint), path, controllers))
    return dirs


def candidate_dirs(relative: str) -> list[tuple[str, Path]]:
    """(fstype-ish key, dir) where runc may have created the cgroup `relative`; v1 first."""
    return [(mountpoint, path) for mountpoint, path, _ in _dirs(relative)]


def controller_dirs(relative: str) -> dict[str, Path]:
    """Existing dirs of the cgroup `relative` by controller ("memory", "cpuacct", "pids",
    "blkio", ...; "" for a v2 dir that has controllers enabled). Empty once it is gone."""
    found: dict[str, Path] = {}
    for _, path, controllers in _dirs(relative):
        if not path.is_dir():
            continue
        if not controllers:
            if (path / "cgroup.controllers").exists() and (path / "memory.current").exists():
                found.setdefault("", path)
            continue
        for controller in controllers:
            found.setdefault(controller, path)
    return found


def count_procs(relative: str) -> int:
    """Processes in the cgroup `relative` (zombies excluded), read from the pids hierarchy or v2."""
    best: Path | None = None
    for mountpoint, path in candidate_dirs(relative):
        if (path / "cgroup.procs").exists():
            best = path
            if mountpoint.endswith("/pids"):
                break
    if best is None:
        return 0
    try:
        return len((best / "cgroup.procs").read_text().split())
    except FileNotFoundError:
        return 0  # removed between the check and the read: the container is gone


def remove_dirs(relatives: list[str]) -> list[Path]:
    """rmdir each of `relatives` (deepest first) in every hierarchy; return what still exists.

    Busy (processes inside) or non-empty (other containers) dirs stay and are reported.
    """
    left = []
    for relative in relatives:
        for _, path in candidate_dirs(relative):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                left.append(path)
    return left


def remove_tree(relative: str, spare: Collection[str] = ()) -> list[Path]:
    """rmdir `relative` and every dir below it, deepest first, in every hierarchy; return what
    is left (busy: processes inside). For start-up: the dirs named in `spare` (the containers
    that run on) and what is below them are not touched, nor reported."""
    left = []
    for _, top in candidate_dirs(relative):
        if not top.is_dir():
            continue
        walked = []
        for dirpath, dirs, _files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in spare]
            walked.append(dirpath)
        for dirpath in sorted(walked, key=lambda path: -path.count("/")):
            if spare and dirpath == str(top):
                continue  # holds the spared ones
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                left.append(Path(dirpath))
    return left
