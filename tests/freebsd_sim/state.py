"""The simulated host's state: JSON documents in one directory, one lock for every stand-in run.

Each stand-in takes the lock for its whole run (`jexec` releases it before it execs), so two
concurrent commands see each other's changes as the real kernel would serialize them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Refused(Exception):
    """What a real tool would refuse: printed on stderr, exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Unsupported(Refused):
    """Something the simulation does not model (kleened should not need it): exit 2."""

    def __init__(self, what: str) -> None:
        super().__init__(f"freebsd-sim: {what} is not simulated", 2)


class State:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mnt = root / "mnt"  # dataset mountpoints
        self.snapshots = root / "snapshots"  # one copy per snapshot
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[State]:
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    def lock(self) -> None:
        """Take the host's lock (again, after `unlock` let a long transfer run unlocked)."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self, name: str, default: Any) -> Any:
        path = self.root / f"{name}.json"
        if not path.exists():
            return default
        return json.loads(path.read_text())

    def save(self, name: str, data: Any) -> None:
        tmp = self.root / f".{name}.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.root / f"{name}.json")


def linux_tool(name: str) -> str:
    """The host's own `mount`/`umount`: never the stand-ins, which may come first on PATH."""
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    raise FileNotFoundError(name)


def out(text: str) -> None:
    sys.stdout.write(text)


def err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def mounted_nodes() -> list[str]:
    """Every mountpoint of this (Linux) host, from /proc/self/mountinfo."""
    nodes = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            nodes.append(line.split()[4].replace("\\040", " "))
    return nodes


def _pids(links: tuple[str, ...], match) -> list[int]:
    """Pids one of whose /proc links (`root`, `cwd`) satisfies `match`; gone processes and
    zombies (their links cannot be read) are left out."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for link in links:
            try:
                target = os.readlink(f"/proc/{entry}/{link}")
            except OSError:
                continue
            if match(target):
                found.append(int(entry))
                break
    return sorted(found)


def processes_under(path: str) -> list[int]:
    """Pids whose root directory is `path` (a simulated jail's processes: they run chrooted there)."""
    real = os.path.realpath(path)
    return _pids(("root",), lambda target: target == real)


def busy_under(path: str) -> list[int]:
    """Pids whose root or cwd is at or below `path` (what keeps a filesystem busy)."""
    real = os.path.realpath(path)
    return _pids(("root", "cwd"), lambda target: target == real or target.startswith(real + "/"))
