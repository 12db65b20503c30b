"""Idmapped mounts: the files of layers and volumes as a user-namespaced container sees them.

A container in a user namespace runs its root as host uid `uid_base` (a subordinate range, as
Docker's userns-remap). Its files must then *appear* owned by that range while staying on disk
exactly as for every other container, so images, build layers and volumes are shared. The
kernel does that with an idmapped mount (Linux 5.12; overlayfs accepts idmapped layers from
5.19): `open_tree(OPEN_TREE_CLONE)` makes a detached copy of a directory's mount,
`mount_setattr(MOUNT_ATTR_IDMAP)` gives it the mapping of a user namespace, `move_mount`
attaches it. runc 1.1 cannot do it itself (`mounts[].uidMappings` came in runc 1.2).

overlayfs itself cannot be idmapped, but its layers can: the overlay is mounted on top of an
idmapped view of the state root, so the lower layers *and* the upper dir are shifted. The
mapping has one more line than the container's: host root (the daemon, which writes overlay's
work dir and whiteouts) maps to the otherwise unused id `NOBODY_ON_DISK`; without it those
writes fail with EOVERFLOW and overlay falls back to read-only.

Vocabulary: a *mapping* is the `uid_map` text; a *userns fd* is an open `/proc/<pid>/ns/user`
of a short-lived process that carries the mapping (the fd keeps the namespace alive).
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import pwd
import subprocess
import threading
from pathlib import Path

from kleened.platform.base import UserNamespace

NOBODY_ON_DISK = 4294967294  # on-disk owner of what host root writes through an idmapped mount
MIN_RANGE = 65536  # ids a container needs: 0..65535, nobody (65534) included

_SYS_OPEN_TREE = {"x86_64": 428, "aarch64": 428}
_SYS_MOVE_MOUNT = {"x86_64": 429, "aarch64": 429}
_SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x100000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def mapping_of(userns: UserNamespace, base: str) -> str:
    """The uid_map/gid_map text of an idmapped mount for `userns` (see the module docstring)."""
    start = userns.uid_base if base == "uid" else userns.gid_base
    return f"0 {start} {userns.size}\n{NOBODY_ON_DISK} 0 1\n"


def _syscall(table: dict[str, int], *args: object) -> int:
    number = table.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"idmapped mounts are not wired for {os.uname().machine}")
    result = _libc.syscall(number, *args)
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(result)


class UsernsFds:
    """Open userns fds, one per range, made on first use and kept for the daemon's life."""

    def __init__(self) -> None:
        self._fds: dict[UserNamespace, int] = {}
        self._lock = threading.Lock()

    def get(self, userns: UserNamespace) -> int:
        with self._lock:
            if userns not in self._fds:
                self._fds[userns] = _new_userns_fd(userns)
            return self._fds[userns]

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _new_userns_fd(userns: UserNamespace) -> int:
    """A user namespace with the idmapped-mount mapping of `userns`, as an fd.

    `unshare --user cat` enters a new namespace, then cat echoes the byte we send: once it has,
    the namespace exists and we (host root) write its maps from outside. cat ends when we close
    its input; the fd keeps the namespace.
    """
    proc = subprocess.Popen(["unshare", "--user", "--", "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, close_fds=True)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b".")
        proc.stdin.flush()
        if proc.stdout.read(1) != b".":
            raise OSError(errno.EPERM, "could not create a user namespace (unshare --user failed)")
        Path(f"/proc/{proc.pid}/uid_map").write_text(mapping_of(userns, "uid"))
        Path(f"/proc/{proc.pid}/gid_map").write_text(mapping_of(userns, "gid"))
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(10)


def bind(source: Path, target: Path, userns_fd: int) -> None:
    """Attach at `target` (an existing dir or file) an idmapped view of `source` (not recursive).

    Undo with `umount(target)`. Raises OSError (EINVAL: the filesystem cannot be idmapped).
    """
    fd = _syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC)
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
        _syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(fd)


# --- subordinate ranges (/etc/subuid, /etc/subgid) ------------------------------------------------


class RangeError(ValueError):
    pass


def parse_subid(text: str, owner: str, owner_id: int) -> tuple[int, int] | None:
    """The first range of `owner` (by name or numeric id) in subuid/subgid text: (start, count)."""
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (owner, str(owner_id)):
            continue
        try:
            return int(fields[1]), int(fields[2])
        except ValueError:
            continue
    return None


def parse_remap(value: str, etc: Path = Path("/etc")) -> UserNamespace:
    """The `userns_remap` setting: `UID:GID:SIZE` (explicit), or `USER[:GROUP]` whose ranges
    are read from /etc/subuid and /etc/subgid, as Docker's `userns-remap`."""
    parts = value.split(":")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        uid, gid, size = (int(p) for p in parts)
        return _checked(UserNamespace(uid_base=uid, gid_base=gid, size=size))
    if not 1 <= len(parts) <= 2 or not parts[0]:
        raise RangeError(f"userns_remap '{value}': use USER[:GROUP] or UID_BASE:GID_BASE:SIZE")
    user = parts[0]
    group = parts[1] if len(parts) == 2 else user
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise RangeError(f"userns_remap: no such user or group '{value}'") from None
    ranges = []
    for name, owner, owner_id in (("subuid", user, uid), ("subgid", group, gid)):
        try:
            found = parse_subid((etc / name).read_text(), owner, owner_id)
        except FileNotFoundError:
            found = None
        if found is None:
            raise RangeError(f"userns_remap: '{owner}' has no range in {etc / name}")
        ranges.append(found)
    (uid_base, uid_count), (gid_base, gid_count) = ranges
    return _checked(UserNamespace(uid_base=uid_base, gid_base=gid_base, size=min(uid_count, gid_count)))


def _checked(userns: UserNamespace) -> UserNamespace:
    if userns.size < MIN_RANGE:
        raise RangeError(f"userns_remap: the range has {userns.size} ids, a container needs {MIN_RANGE}")
    if min(userns.uid_base, userns.gid_base) < 1 or max(userns.uid_base, userns.gid_base) + userns.size > 2**32 - 2:
        raise RangeError("userns_remap: the range must start above 0 and end below 4294967294")
    return userns
