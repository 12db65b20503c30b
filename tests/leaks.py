"""What a stopped daemon must not leave on the host: mounts, runc containers, cgroups."""

from __future__ import annotations

import os
import subprocess
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
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if top.count("/") > 8:
            dirs[:] = []
            continue
        found += [os.path.join(top, d) for d in dirs if d == prefix]
    return found


def host_leaks(state_root: Path, prefix: str) -> list[str]:
    """Every kind of leftover, described; empty when the host is clean."""
    leaks = [f"mount {m}" for m in mounts_under(state_root)]
    leaks += [f"runc container {c}" for c in runc_containers(state_root)]
    leaks += [f"cgroup {c}" for c in cgroup_dirs(prefix)]
    return leaks
