"""Simulated `mount_nullfs`, `umount`, `mount -p` and jail(8)'s devfs: real Linux mounts.

nullfs is a bind mount (`mount --bind`, remounted read-only for `-o ro`), devfs is a tmpfs with
the usual device nodes plus the host's /dev/pts (devfs ruleset 4 shows a jail the host's ptys).
Like the real tools: a missing source or target is refused, the target is resolved (symlinks
followed, as mount_nullfs' realpath does), unmounting something that is not mounted fails, and
a mount with another mount inside is busy. Safety of the simulation, not FreeBSD behaviour: a
target that resolves outside the simulated host's directory is refused (it would be a host
escape on FreeBSD, upstream's B9), so a wrong driver cannot bind over the test machine's files.
`mount -p` lists the datasets (type zfs) and these mounts, in fstab format.
"""

from __future__ import annotations

import os
import stat
import subprocess

from . import zfs
from .state import Refused, State, Unsupported, linux_tool, mounted_nodes, out

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))


def _load(state: State) -> list[dict]:
    return state.load("mounts", [])


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([linux_tool(tool), *args], capture_output=True, text=True, check=False)


def _inside(state: State, path: str) -> bool:
    root = os.path.realpath(state.root)
    return path == root or path.startswith(root + "/")


def mount_nullfs(state: State, argv: list[str]) -> int:
    args, read_only = list(argv), False
    if args[:1] == ["-o"]:
        read_only = args[1] == "ro"
        args = args[2:]
    if len(args) != 2:
        raise Refused("usage: mount_nullfs [-o options] target mount-point")
    source, target = args
    for path in (source, target):
        if not os.path.exists(path):
            raise Refused(f"mount_nullfs: {path}: No such file or directory")
    real = os.path.realpath(target)
    if not _inside(state, real):
        raise Refused(f"freebsd-sim: refusing to mount over {real}: outside the simulated host", 3)
    if stat.S_ISDIR(os.stat(source).st_mode) != stat.S_ISDIR(os.stat(real).st_mode):
        raise Refused(f"mount_nullfs: {real}: Not a directory")
    done = _run("mount", "--bind", source, real)
    if done.returncode != 0:
        raise Refused(f"mount_nullfs: {done.stderr.strip()}")
    if read_only:
        _run("mount", "-o", "remount,bind,ro", real)
    records = _load(state)
    records.append({"type": "nullfs", "special": source, "node": real, "ro": read_only, "inner": []})
    state.save("mounts", records)
    return 0


def mount_devfs(state: State, node: str) -> None:
    """jail(8)'s `mount.devfs`: a devfs stand-in at `<path>/dev` (the directory must exist)."""
    if not os.path.isdir(node):
        raise Refused(f"jail: {node}: No such file or directory")
    done = _run("mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "devfs", node)
    if done.returncode != 0:
        raise Refused(f"jail: devfs: {done.stderr.strip()}")
    for name, major, minor in _DEVICES:
        os.mknod(os.path.join(node, name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(os.path.join(node, name), 0o666)
    os.mkdir(os.path.join(node, "pts"))
    _run("mount", "--bind", "/dev/pts", os.path.join(node, "pts"))
    records = _load(state)
    records.append({"type": "devfs", "special": "devfs", "node": node, "ro": False,
                    "inner": [os.path.join(node, "pts")]})
    state.save("mounts", records)


def umount(state: State, argv: list[str]) -> int:
    args = [a for a in argv if a != "-f"]
    if len(args) != 1:
        raise Unsupported("umount with several paths or -a")
    node = os.path.realpath(args[0])
    records = _load(state)
    record = next((r for r in records if r["node"] == node), None)
    if record is None or node not in mounted_nodes():
        raise Refused(f"umount: {args[0]}: not a file system root directory")
    others = [n for n in mounted_nodes() if n.startswith(node + "/") and n not in record["inner"]]
    if others:
        raise Refused(f"umount: unmount of {node} failed: Device busy")
    for inner in [*record["inner"], node]:
        done = _run("umount", inner)
        if done.returncode != 0 and inner in mounted_nodes():
            raise Refused(f"umount: unmount of {node} failed: Device busy")
    records.remove(record)
    state.save("mounts", records)
    return 0


def _escape(path: str) -> str:
    return path.replace(" ", "\\040").replace("\t", "\\011")


def mount(state: State, argv: list[str]) -> int:
    if "-p" not in argv:
        raise Unsupported(f"mount {' '.join(argv)}")
    wanted = argv[argv.index("-t") + 1] if "-t" in argv else None
    lines = ["zroot/ROOT/default\t/\tzfs\trw\t0 0"]
    data = zfs.load(state)  # the datasets are mounted filesystems too
    for name in sorted(data["datasets"]):
        lines.append(f"{name}\t{_escape(zfs.mountpoint(state, data, name))}\tzfs\trw\t0 0")
    live = set(mounted_nodes())
    for record in _load(state):
        if record["node"] in live:
            options = "ro" if record["ro"] else "rw"
            lines.append(f"{_escape(record['special'])}\t{_escape(record['node'])}\t{record['type']}\t{options}\t0 0")
    for line in lines:
        if wanted is None or line.split("\t")[2] == wanted:
            out(line + "\n")
    return 0


def cleanup(state: State) -> list[str]:
    """For the fixture: unmount everything the simulation mounted (deepest first); what was left."""
    left = []
    for record in sorted(_load(state), key=lambda r: r["node"].count("/"), reverse=True):
        for inner in [*record["inner"], record["node"]]:
            if inner in mounted_nodes():
                left.append(inner)
                _run("umount", "-l", inner)
    state.save("mounts", [])
    return left
