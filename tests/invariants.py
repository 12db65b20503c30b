"""What must hold on the host and in the API of a running kleened, whatever happened before.

`violations(daemon)` compares what the host shows (mounts, runc, cgroups, namespaces, links,
the nft table, the state directories, the daemon's children and fds) with what the API says
exists and runs, and describes every difference:
- nothing of a container that does not run (runtime state, mount, cgroup, namespace, veth,
  published-port rule), and nothing at all of a container that does not exist (a directory, a
  log): no leak, no orphan;
- every listed container has its filesystem and inspects (no ghost); every endpoint's network
  and container exist; every volume has its directory;
- no zombie child, no fd of the daemon left on a container's files or terminal when none runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests import leaks
from tests.daemon import Daemon


def violations(daemon: Daemon, *, zombie_deadline: float = 5.0) -> list[str]:
    with daemon.client() as api:
        return _api_view(api, daemon) + _host_view(api, daemon, zombie_deadline)


def _api_view(api: httpx.Client, daemon: Daemon) -> list[str]:
    found = []
    for c in api.get("/containers/list?all=true").json():
        r = api.get(f"/containers/{c['id']}/inspect")
        if r.status_code != 200:
            found.append(f"listed container {c['id']} does not inspect: {r.status_code} {r.text}")
        elif not (daemon.state_root / "containers" / c["id"]).is_dir():
            found.append(f"ghost: container {c['id']} has no filesystem")
    containers = {c["id"] for c in api.get("/containers/list?all=true").json()}
    networks = {n["id"] for n in api.get("/networks/list").json()}
    for network_id in networks:
        r = api.get(f"/networks/{network_id}/inspect")
        if r.status_code != 200:
            continue  # removed meanwhile
        for e in r.json()["network_endpoints"]:
            if e["container_id"] not in containers:
                found.append(f"endpoint {e['id']} of network {network_id} names a missing container")
    for v in api.get("/volumes/list").json():
        if not Path(v["mountpoint"]).is_dir():
            found.append(f"volume {v['name']} has no directory")
    return found


def _host_view(api: httpx.Client, daemon: Daemon, zombie_deadline: float) -> list[str]:
    listed = api.get("/containers/list?all=true").json()
    existing = {c["id"] for c in listed}
    running = {c["id"] for c in listed if c["running"]}
    root, prefix = daemon.state_root, daemon.prefix
    found = [f"runc container {c} does not run" for c in set(leaks.runc_containers(root)) - running]
    found += [f"cgroup of {c}, which does not run" for c in leaks.container_cgroups(prefix) - running]
    found += [f"netns {n}, whose container does not run" for n in leaks.netns(prefix)
              if n.removeprefix(f"{prefix}-") not in running]
    for m in leaks.mounts_under(root):
        rel = Path(m).relative_to(root.resolve())
        if not (len(rel.parts) == 3 and rel.parts[0] == "containers" and rel.parts[1] in running
                and rel.parts[2] == "rootfs"):
            found.append(f"mount {m}, which no running container owns")
    for entry in (root / "containers").iterdir():
        if entry.name not in existing:
            found.append(f"orphan container directory {entry.name}")
    for entry in (root / "logs").iterdir() if (root / "logs").is_dir() else []:
        if entry.name not in existing:
            found.append(f"orphan log directory {entry.name}")
    found += _veths(api, prefix, running)
    found += _port_rules(api, prefix, running)
    pid = daemon.pid
    found += [f"zombie child {z}" for z in leaks.zombies(pid, zombie_deadline)]
    if not running:
        found += leaks.container_fds(pid, root)
    return found


def _veths(api: httpx.Client, prefix: str, running: set[str]) -> list[str]:
    bridges = {n["interface"] for n in api.get("/networks/list").json()}
    wanted = set()
    for container_id in running:
        for e in api.get(f"/containers/{container_id}/inspect").json()["container_endpoints"]:
            if e.get("epair"):
                wanted.add(e["epair"])
    return [f"link {name}, which nothing running uses" for name in leaks.links(prefix)
            if name not in bridges and name not in wanted]


def _port_rules(api: httpx.Client, prefix: str, running: set[str]) -> list[str]:
    """Every DNAT rule of the table is for a published port of a running container."""
    table = leaks.nft_table(prefix)
    if table is None:
        return []
    allowed = set()
    for container_id in running:
        for p in api.get(f"/containers/{container_id}/inspect").json()["container"]["public_ports"]:
            for address in (p["ip_address"], p["ip_address6"]):
                if address:
                    allowed.add(address)
    found = []
    for line in table.splitlines():
        if re.search(r"\bdnat (ip6? )?to\b", line):
            target = line.split("dnat", 1)[1]
            if not any(re.search(rf"\b{re.escape(a)}\b", target) for a in allowed):
                found.append(f"port rule of a container that does not run: {line.strip()}")
    return found


def assert_clean(daemon: Daemon, **kwargs: float) -> None:
    problems = violations(daemon, **kwargs)
    assert not problems, "invariants violated:\n" + "\n".join(problems) + "\n" + _log_tail(daemon)


def _log_tail(daemon: Daemon, lines: int = 40) -> str:
    return "daemon log (end):\n" + "\n".join(daemon.log().splitlines()[-lines:])

