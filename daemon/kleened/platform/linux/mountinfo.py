"""Read `/proc/self/mountinfo`: the daemon's view of what is mounted where.

Drivers check it before deleting anything (a recursive delete through a live mount would
destroy the mounted data, see containerd `core/mount/temp.go`) and after a crash to find what
is still mounted. Only the daemon's own mount namespace is visible here; mounts that runc makes
inside a container's namespace never show up, which is what we want.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    mountpoint: Path
    root: str  # the path inside the filesystem that is mounted (not "/" for bind and cgroup-ns mounts)
    fstype: str
    source: str
    super_options: str  # filesystem-specific options, e.g. overlay's lowerdir=...

    def option(self, key: str) -> str | None:
        for item in self.super_options.split(","):
            name, _, value = item.partition("=")
            if name == key:
                return value
        return None


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        mounts.append(
            Mount(
                mountpoint=Path(_unescape(fields[4])),
                root=_unescape(fields[3]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=fields[sep + 3] if len(fields) > sep + 3 else "",
            )
        )
    return mounts


def mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    with open(path) as f:
        return parse(f.read())


def _lines_with(needles: tuple[str, ...], source: str) -> list[Mount]:
    """The mounts whose line contains one of `needles`: only those are parsed, so a check costs
    little with thousands of mounts (each running container adds some)."""
    with open(source) as f:
        return parse("\n".join(line for line in f.read().splitlines() if any(n in line for n in needles)))


def _mentioning(path: Path, source: str = "/proc/self/mountinfo") -> list[Mount]:
    """A superset of the mounts at or below `path` (every line that names it)."""
    return _lines_with((_escape(str(path)),), source)


def of_types(*fstypes: str, source: str = "/proc/self/mountinfo") -> list[Mount]:
    """The mounts of these filesystem types (e.g. "cgroup", "cgroup2")."""
    return [m for m in _lines_with(tuple(f" - {t} " for t in fstypes), source) if m.fstype in fstypes]


def mounts_under(path: Path) -> list[Mount]:
    """Mounts at `path` or below it, deepest first (the order to unmount them in)."""
    found = [m for m in _mentioning(path) if m.mountpoint == path or m.mountpoint.is_relative_to(path)]
    return sorted(found, key=lambda m: len(m.mountpoint.parts), reverse=True)


def is_mountpoint(path: Path) -> bool:
    return any(m.mountpoint == path for m in _mentioning(path))


def _escape(path: str) -> str:
    """As the kernel writes a path in mountinfo (the inverse of `_unescape`)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)
