"""The process that reads and writes a container's files for `cp`: run as
`python -m kleened.platform.chroot_tar ROOT OP PATH [MAX_BYTES MAX_ENTRIES]`.

It imports everything it needs, then `chroot`s into ROOT: from there on the kernel resolves every
path as the container does (an absolute symlink restarts at the container's `/`, `..` stops
there), so a container process that swaps a directory for a symlink while a copy runs can only
redirect it to another place *inside* the container. That is Docker's answer to the same race
(its "chrootarchive"); resolving on the host and then opening would leave a window.

Nothing is looked up by name after the chroot: `tarfile` gets no `pwd`/`grp` (they would read
the container's /etc/passwd and may load its NSS libraries into a root process); owners are
numeric.

Operations (results are one JSON line on stdout; failures `{"error": ..., "kind": ...}` and exit 1):
- `stat PATH FOLLOW`: the `PathStat` fields of PATH (FOLLOW `1`: of what a link PATH points to);
- `get PATH FOLLOW`: the stat line, then PATH as an uncompressed tar stream, its top entry named after
  PATH's last component;
- `put DIR MAX_BYTES MAX_ENTRIES`: extract the tar stream on stdin into the existing directory
  DIR by `posix_tar`'s rules, then `{"entries": N, "bytes": B}`.
Kinds: `missing` (no such path), `invalid` (not a directory, a hostile or broken archive, over
a limit).
"""

from __future__ import annotations

import bz2  # noqa: F401 - imported before the chroot: tarfile's "r|*" loads them on demand
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import stat
import sys
import tarfile
from typing import Any

from kleened.platform.posix import tar as posix_tar

tarfile.pwd = None  # type: ignore[attr-defined]  # numeric owners only (see the module docstring)
tarfile.grp = None  # type: ignore[attr-defined]


class Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def display_name(path: str) -> str:
    """The name of the entry `path` names: its last component, `/` for the root."""
    trimmed = path.rstrip("/")
    while trimmed.endswith("/."):
        trimmed = trimmed[:-2].rstrip("/")
    if trimmed in ("", "."):
        return "/"
    return trimmed.rsplit("/", 1)[-1]


def follows_link(path: str) -> bool:
    """Docker's rule: the last component is followed only when the path ends with `/` or `/.`."""
    return path.endswith("/") or path.endswith("/.")


def path_stat(path: str, follow: bool) -> dict[str, Any]:
    try:
        st = os.stat(path) if follow or follows_link(path) else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise Failure("missing", f"no such file or directory: '{path}'") from None
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    return {"name": display_name(path), "size": st.st_size, "mode": st.st_mode, "mtime": int(st.st_mtime),
            "link_target": target}


def send_tar(path: str, follow: bool, out: Any) -> None:
    info = path_stat(path, follow)
    out.write(json.dumps(info).encode() + b"\n")
    arcname = "." if info["name"] == "/" else info["name"]
    if follow and stat.S_ISLNK(os.lstat(path).st_mode):
        path = os.path.realpath(path)  # inside the chroot: the container's view
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=arcname, recursive=True)
    out.flush()


def _ignore(*_args: object) -> None:
    return None


def receive_tar(directory: str, source: Any, limits: posix_tar.Limits) -> dict[str, int]:
    try:
        st = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        raise Failure("missing", f"no such directory: '{directory}'") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Failure("invalid", f"'{directory}' is not a directory")
    writer = posix_tar.LayerWriter(os.path.realpath(directory), limits, _ignore, _ignore, same_owner=os.geteuid() == 0)
    try:
        stats = posix_tar.extract_stream(source, writer)
    except posix_tar.ExtractError as exc:
        raise Failure("invalid", str(exc)) from None
    return {"entries": stats.entries, "bytes": stats.bytes}


def main(argv: list[str]) -> int:
    root, op, path, *rest = argv
    os.chroot(root)
    os.chdir("/")
    out = sys.stdout.buffer
    try:
        if op == "stat":
            result = path_stat(path, rest == ["1"])
        elif op == "get":
            send_tar(path, rest == ["1"], out)
            return 0
        elif op == "put":
            limits = posix_tar.Limits(max_bytes=int(rest[0]), max_members=int(rest[1]))
            result = receive_tar(path, sys.stdin.buffer, limits)
        else:
            raise Failure("invalid", f"unknown operation '{op}'")
    except Failure as exc:
        out.write(json.dumps({"error": str(exc), "kind": exc.kind}).encode() + b"\n")
        out.flush()
        return 1
    out.write(json.dumps(result).encode() + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
