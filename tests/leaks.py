"""What kleened must not leave on the host: after it stopped (mounts, runc containers, cgroups,
namespaces, links, its nft table) and while it runs (zombie children, fds of gone containers).

Every check reads the host itself (mountinfo, runc, /sys/fs/cgroup, /run/netns, `ip`, `nft`,
/proc), never the daemon's own account of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mountpoint = line.split()[4].replace("\\040", " ")
            if mountpoint == prefix or mountpoint.startswith(prefix + "/"):
                found.append(mountpoint)
    return found


def runc_containers(state_root: Path) -> list[str]:
    root = state_root / "runc"
    if not root.exists():
        return []
    out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def cgroup_dirs(prefix: str) -> list[str]:
    """Every cgroup dir named `prefix` (the daemon's parent) in any hierarchy."""
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if top.count("/") > 8:
            dirs[:] = []
            continue
        found += [os.path.join(top, d) for d in dirs if d == prefix]
    return found


def container_cgroups(prefix: str) -> set[str]:
    """Ids of the container cgroups (`<prefix>/<id>`) that exist in any hierarchy."""
    return {d for parent in cgroup_dirs(prefix) for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))}


def netns(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{prefix}-"))
    except FileNotFoundError:
        return []


def links(prefix: str) -> list[str]:
    """Links the daemon made (alias `kleened:<prefix>`): bridges and the host ends of veths."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(e["ifname"] for e in json.loads(out or "[]") if e.get("ifalias") == f"kleened:{prefix}")


def nft_table(prefix: str) -> str | None:
    """The daemon's table as `nft` lists it, or None when it does not exist."""
    r = subprocess.run(["nft", "list", "table", "inet", prefix], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def host_leaks(state_root: Path, prefix: str) -> list[str]:
    """What a stopped daemon left behind, described; empty when the host is clean."""
    leaks = [f"mount {m}" for m in mounts_under(state_root)]
    leaks += [f"runc container {c}" for c in runc_containers(state_root)]
    leaks += [f"cgroup {c}" for c in cgroup_dirs(prefix)]
    leaks += [f"netns {n}" for n in netns(prefix)]
    leaks += [f"link {n}" for n in links(prefix)]
    if nft_table(prefix) is not None:
        leaks.append(f"nft table inet {prefix}")
    return leaks


# --- a running daemon ------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def _state_and_name(pid: int) -> tuple[str, str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "", ""
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return rest.split()[0], name


def zombies(pid: int, deadline: float = 5.0) -> list[str]:
    """Zombie children of `pid` that stay zombies until `deadline` seconds have passed (the
    daemon reaps its children as they exit, so a short-lived zombie is not a leak)."""
    end = time.monotonic() + deadline
    while True:
        found = [f"{c} ({name})" for c in children(pid) if (state := _state_and_name(c))[0] == "Z"
                 for name in [state[1]]]
        if not found or time.monotonic() > end:
            return found
        time.sleep(0.05)


def container_fds(pid: int, state_root: Path) -> list[str]:
    """fds of the daemon that point into container state (bundles, console sockets, container
    dirs) or at a terminal: with no container running, any of them is a leak."""
    root = str(state_root.resolve())
    watched = [f"{root}/{d}/" for d in ("bundles", "sockets", "containers")]
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(("/dev/pts/", "/dev/ptmx")) or any(target.startswith(w) for w in watched):
            found.append(f"fd {fd} -> {target}")
    return found
