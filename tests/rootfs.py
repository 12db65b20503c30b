"""A minimal busybox-static root filesystem for tests, and its tarball for `file://` image URLs.

Why busybox-static: one 2 MB binary with no shared libraries, so the tree works as a container
root on any Linux host and costs about 2 ms to mount. The tree is built once per test session
(`session_rootfs`, `session_tarball` cache by directory) because every container test needs it.

Users: `root` (0), `user1` (1000, home /home/user1) and `nobody` (65534), with matching groups,
so tests can check uid/gid handling and a non-root home directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = "/usr/bin/busybox"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
user1:x:1000:1000:user1:/home/user1:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
tty:x:5:
user1:x:1000:
nogroup:x:65534:
"""

_DIRS = {  # path -> mode
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
    "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "root": 0o700,
    "home/user1": 0o755, "var/www": 0o755, "var/tmp": 0o1777,
}  # fmt: skip


def build(dest: Path, busybox: str = BUSYBOX) -> Path:
    """Fill `dest` (created if missing, must be empty) with the busybox tree; return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    for rel, mode in _DIRS.items():
        path = dest / rel
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask; 1777 needs chmod anyway
    os.chown(dest / "home/user1", 1000, 1000)
    shutil.copy2(busybox, dest / "bin/busybox")
    applets = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
    for rel in applets.split():
        if rel in ("bin/busybox", "linuxrc"):
            continue
        link = dest / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/hostname").write_text("busybox\n")
    return dest


def pack(src: Path, tarball: Path) -> Path:
    """Pack the tree at `src` as a gzip tarball whose members are relative (`./bin/...`)."""
    tmp = tarball.with_name(tarball.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(src, arcname=".")
    tmp.rename(tarball)
    return tarball


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


_trees: dict[Path, Path] = {}
_tarballs: dict[Path, Path] = {}


def session_rootfs(workdir: Path) -> Path:
    """The tree under `workdir`, built on first use. Treat it as read-only."""
    if workdir not in _trees:
        _trees[workdir] = build(workdir / "busybox-rootfs")
    return _trees[workdir]


def session_tarball(workdir: Path) -> Path:
    """`busybox-rootfs.tar.gz` under `workdir`, packed on first use."""
    if workdir not in _tarballs:
        _tarballs[workdir] = pack(session_rootfs(workdir), workdir / "busybox-rootfs.tar.gz")
    return _tarballs[workdir]
