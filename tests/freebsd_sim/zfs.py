"""Simulated `zfs`: datasets are directories under `state/mnt`, snapshots are copies under
`state/snapshots`, a clone is a copy of its origin snapshot that remembers its origin.

Refuses as ZFS does: a missing parent, an existing name, cloning or sending a missing snapshot,
destroying a snapshot with clones, a dataset with children or snapshots without `-r`, a dataset
whose snapshots have clones outside what is destroyed, a busy dataset (something mounted below
it, or a process inside it unless `-f`), renaming onto an existing name, promoting a dataset that
is not a clone or whose snapshot names conflict with those that would move to it.

`promote` is ZFS's: the origin's snapshots up to and including the clone's origin move to the
clone (clones of those snapshots follow them), the clone takes the origin's own origin, and the
former origin becomes a clone of the moved snapshot.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

from .state import Refused, State, Unsupported, busy_under, err, mounted_nodes, out

STREAM_MAGIC = b"SIMZFS1 "


def load(state: State) -> dict:
    return state.load("zfs", {"datasets": {}, "snapshots": {}})


def mountpoint(state: State, data: dict, name: str) -> str:
    parent, _, last = name.rpartition("/")
    if not parent:
        return str(state.mnt / name)
    return mountpoint(state, data, parent) + "/" + last


def _snapdir(state: State, snap: str) -> Path:
    return state.snapshots / snap.replace("/", "%")


def _children(data: dict, name: str) -> list[str]:
    return sorted(d for d in data["datasets"] if d.startswith(name + "/"))


def _clones_of(data: dict, snap: str) -> list[str]:
    return sorted(d for d, info in data["datasets"].items() if info.get("origin") == snap)


def copy_tree(src: str, dst: str, skip: set[str]) -> None:
    """Copy a dataset's files as a snapshot keeps them: owners, modes, times and links kept;
    other filesystems mounted below (and child datasets) appear as empty directories."""
    os.makedirs(dst, exist_ok=True)
    st = os.lstat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.chown(dst, st.st_uid, st.st_gid)
    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        est = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            os.symlink(os.readlink(s), d)
            os.lchown(d, est.st_uid, est.st_gid)
        elif entry.is_dir(follow_symlinks=False):
            if s in skip:
                os.makedirs(d, exist_ok=True)
                continue
            copy_tree(s, d, skip)
        elif entry.is_file(follow_symlinks=False):
            shutil.copy2(s, d, follow_symlinks=False)
            os.chown(d, est.st_uid, est.st_gid)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _skips(state: State, data: dict, name: str) -> set[str]:
    mp = mountpoint(state, data, name)
    skip = {mountpoint(state, data, c) for c in _children(data, name)}
    skip |= {n for n in mounted_nodes() if n.startswith(mp + "/")}
    return skip


def _need(data: dict, name: str) -> dict:
    if name not in data["datasets"]:
        raise Refused(f"cannot open '{name}': dataset does not exist")
    return data["datasets"][name]


def _busy(state: State, data: dict, name: str, *, force: bool) -> None:
    mp = mountpoint(state, data, name)
    if any(n == mp or n.startswith(mp + "/") for n in mounted_nodes()) or (not force and busy_under(mp)):
        raise Refused(f"cannot unmount '{mp}': pool or dataset is busy")


def create(state: State, data: dict, args: list[str]) -> None:
    if not args or args[-1].startswith("-"):
        raise Refused("missing dataset argument")
    name = args[-1]
    parent = name.rpartition("/")[0]
    if "-p" not in args and parent and parent not in data["datasets"]:
        raise Refused(f"cannot create '{name}': parent does not exist")
    if name in data["datasets"]:
        raise Refused(f"cannot create '{name}': dataset already exists")
    data["datasets"][name] = {"origin": None}
    os.makedirs(mountpoint(state, data, name), exist_ok=True)


def snapshot(state: State, data: dict, args: list[str]) -> None:
    full = args[-1]
    name, _, snap = full.partition("@")
    _need(data, name)
    if not snap or full in data["snapshots"]:
        raise Refused(f"cannot create snapshot '{full}': dataset already exists")
    copy_tree(mountpoint(state, data, name), str(_snapdir(state, full)), _skips(state, data, name))
    data["snapshots"][full] = {}


def clone(state: State, data: dict, args: list[str]) -> None:
    origin, target = args[-2], args[-1]
    if origin not in data["snapshots"]:
        raise Refused(f"cannot open '{origin}': dataset does not exist")
    if target in data["datasets"]:
        raise Refused(f"cannot create '{target}': dataset already exists")
    if target.rpartition("/")[0] not in data["datasets"]:
        raise Refused(f"cannot create '{target}': parent does not exist")
    data["datasets"][target] = {"origin": origin}
    mp = mountpoint(state, data, target)
    shutil.rmtree(mp, ignore_errors=True)
    copy_tree(str(_snapdir(state, origin)), mp, set())


def _destroy_snapshot(state: State, data: dict, full: str) -> None:
    if full not in data["snapshots"]:
        raise Refused("could not find any snapshots to destroy; check snapshot names.")
    clones = _clones_of(data, full)
    if clones:
        raise Refused(f"cannot destroy '{full}': snapshot has dependent clones\n"
                      "use '-R' to destroy the following datasets:\n" + "\n".join(clones))
    shutil.rmtree(_snapdir(state, full), ignore_errors=True)
    del data["snapshots"][full]


def destroy(state: State, data: dict, args: list[str]) -> None:
    flags = "".join(a[1:] for a in args[:-1] if a.startswith("-"))
    if "R" in flags or "n" in flags:
        raise Unsupported("zfs destroy -R/-n")
    target = args[-1]
    if "@" in target:
        return _destroy_snapshot(state, data, target)
    _need(data, target)
    victims = [target, *_children(data, target)]
    snaps = [s for s in data["snapshots"] if s.partition("@")[0] in victims]
    if "r" not in flags and (len(victims) > 1 or snaps):
        raise Refused(f"cannot destroy '{target}': filesystem has children\n"
                      "use '-r' to destroy the following datasets:\n" + "\n".join(victims[1:] + snaps))
    outside = [c for s in snaps for c in _clones_of(data, s) if c not in victims]
    if outside:
        raise Refused(f"cannot destroy '{target}': filesystem has dependent clones\n"
                      "use '-R' to destroy the following datasets:\n" + "\n".join(outside))
    _busy(state, data, target, force="f" in flags)
    mp = mountpoint(state, data, target)
    for snap in snaps:
        shutil.rmtree(_snapdir(state, snap), ignore_errors=True)
        del data["snapshots"][snap]
    for victim in victims:
        del data["datasets"][victim]
    shutil.rmtree(mp, ignore_errors=True)


def rename(state: State, data: dict, args: list[str]) -> None:
    source, target = args[-2], args[-1]
    _need(data, source)
    if target in data["datasets"]:
        raise Refused(f"cannot rename to '{target}': dataset already exists")
    if target.rpartition("/")[0] not in data["datasets"] or target.startswith(source + "/"):
        raise Refused(f"cannot rename to '{target}': parent does not exist")
    _busy(state, data, source, force="-f" in args)
    old_mp = mountpoint(state, data, source)

    def moved(name: str) -> str:
        return target + name[len(source):] if name == source or name.startswith(source + "/") else name

    data["datasets"] = {moved(n): info for n, info in data["datasets"].items()}
    for info in data["datasets"].values():
        if info.get("origin"):
            ds, _, snap = info["origin"].partition("@")
            info["origin"] = f"{moved(ds)}@{snap}"
    renamed = {}
    for snap in data["snapshots"]:
        ds, _, name = snap.partition("@")
        new = f"{moved(ds)}@{name}"
        if new != snap:
            _snapdir(state, snap).rename(_snapdir(state, new))
        renamed[new] = data["snapshots"][snap]
    data["snapshots"] = renamed
    os.rename(old_mp, mountpoint(state, data, target))


def promote(state: State, data: dict, args: list[str]) -> None:
    if not args or args[-1].startswith("-"):
        raise Refused("missing dataset argument")
    target = args[-1]
    if "@" in target:
        raise Refused(f"cannot open '{target}': operation not applicable to datasets of this type")
    info = _need(data, target)
    origin = info.get("origin")
    if not origin:
        raise Refused(f"cannot promote '{target}': not a cloned filesystem")
    parent, _, at = origin.partition("@")
    own = [s for s in data["snapshots"] if s.partition("@")[0] == parent]
    moving = own[:own.index(origin) + 1]
    for snap in moving:
        name = snap.partition("@")[2]
        if f"{target}@{name}" in data["snapshots"]:
            raise Refused(f"cannot promote '{target}': conflicting snapshot '@{name}' from parent '{parent}'")
    renamed = {}
    for snap, value in data["snapshots"].items():
        if snap in moving:
            new = f"{target}@{snap.partition('@')[2]}"
            _snapdir(state, snap).rename(_snapdir(state, new))
            renamed[new] = value
        else:
            renamed[snap] = value
    data["snapshots"] = renamed
    parent_origin = data["datasets"][parent].get("origin")
    for name, other in data["datasets"].items():
        if other.get("origin") in moving and name != target:
            other["origin"] = f"{target}@{other['origin'].partition('@')[2]}"
    info["origin"] = parent_origin
    data["datasets"][parent]["origin"] = f"{target}@{at}"


def send(state: State, data: dict, args: list[str]) -> None:
    """The stream is a header and a tar of the snapshot. It is written without the host's lock
    (a snapshot never changes), so a `zfs receive` at the other end of the pipe can run."""
    import tarfile  # only here: every stand-in run pays its imports

    full = args[-1]
    if full not in data["snapshots"]:
        raise Refused(f"cannot open '{full}': dataset does not exist")
    if "-v" in args:
        err(f"full send of {full} estimated size is (simulated)")
    source = str(_snapdir(state, full))
    state.unlock()
    stream = sys.stdout.buffer
    stream.write(STREAM_MAGIC + full.encode() + b"\n")
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        tar.add(source, arcname=".")
    stream.flush()
    state.lock()


def receive(state: State, data: dict, args: list[str]) -> dict:
    """Reads the whole stream unlocked (into a private directory), then registers the dataset."""
    import tarfile

    target = args[-1]
    _receivable(data, target)
    state.unlock()  # before reading: the sender needs the lock to start writing
    stream = sys.stdin.buffer
    header = stream.readline()
    if not header.startswith(STREAM_MAGIC):
        state.lock()
        raise Refused("cannot receive: invalid stream (bad magic number)")
    snap = header[len(STREAM_MAGIC):].decode().strip().partition("@")[2]
    incoming = state.root / f"receiving-{os.getpid()}"
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(incoming, numeric_owner=True, filter="fully_trusted")
    state.lock()
    data = load(state)
    try:
        _receivable(data, target)
        mp = mountpoint(state, data, target)
        os.rename(incoming, mp)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    data["datasets"][target] = {"origin": None}
    copy_tree(mp, str(_snapdir(state, f"{target}@{snap}")), set())
    data["snapshots"][f"{target}@{snap}"] = {}
    return data


def _receivable(data: dict, target: str) -> None:
    if target in data["datasets"]:
        raise Refused(f"cannot receive new filesystem stream: destination '{target}' exists")
    if target.rpartition("/")[0] not in data["datasets"]:
        raise Refused(f"cannot receive new filesystem stream: parent of '{target}' does not exist")


def _prop(state: State, data: dict, name: str, prop: str) -> str:
    if "@" in name:
        values = {"name": name, "type": "snapshot", "mountpoint": "-", "origin": "-",
                  "clones": ",".join(_clones_of(data, name)) or "-"}
    else:
        values = {"name": name, "type": "filesystem", "mountpoint": mountpoint(state, data, name),
                  "origin": data["datasets"][name].get("origin") or "-", "clones": "-"}
    if prop not in values:
        raise Unsupported(f"zfs property '{prop}'")
    return values[prop]


def _option(args: list[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


def list_(state: State, data: dict, args: list[str]) -> None:
    props = _option(args, "-o", "name,used,avail,refer,mountpoint").split(",")
    types = _option(args, "-t", "filesystem").split(",")
    depth = int(_option(args, "-d", "-1")) if "-d" in args else (-1 if "-r" in args else 0)
    skip = {i + 1 for i, a in enumerate(args) if a in ("-o", "-t", "-d", "-s")}
    targets = [a for i, a in enumerate(args) if not a.startswith("-") and i not in skip]
    names = []
    for target in targets or sorted(n for n in data["datasets"] if "/" not in n):
        if target not in data["datasets"] and target not in data["snapshots"]:
            raise Refused(f"cannot open '{target}': dataset does not exist")
        family = [target] if "@" in target else [target] + [
            c for c in _children(data, target) if depth < 0 or c.count("/") - target.count("/") <= depth]
        for name in family:
            if "@" in name or "filesystem" in types or "all" in types:
                names.append(name)
            if "@" not in name and ("snapshot" in types or "all" in types) and (depth != 0 or "snapshot" in types):
                names += [s for s in data["snapshots"] if s.partition("@")[0] == name]
    if "-H" not in args:
        out("\t".join(p.upper() for p in props) + "\n")
    for name in names:
        out("\t".join(_prop(state, data, name, p) for p in props) + "\n")


COMMANDS = {"create": create, "snapshot": snapshot, "clone": clone, "destroy": destroy, "rename": rename,
            "promote": promote, "send": send, "receive": receive, "recv": receive, "list": list_}


def main(state: State, argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        raise Unsupported(f"zfs {' '.join(argv[:1])}")
    data = load(state)
    data = COMMANDS[argv[0]](state, data, argv[1:]) or data  # refusals come before any change
    if argv[0] not in ("send", "list"):  # send ran unlocked: its copy of the state may be stale
        state.save("zfs", data)
    return 0


def create_pool(state: State, pool: str) -> None:
    """The fixture's `zpool create`: a pool's root dataset."""
    data = load(state)
    data["datasets"].setdefault(pool, {"origin": None})
    os.makedirs(mountpoint(state, data, pool), exist_ok=True)
    state.save("zfs", data)
