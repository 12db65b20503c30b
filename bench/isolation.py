"""Isolation costs: the default seccomp profile on a syscall-heavy loop, applying limits at start,
and the daemon's CPU while it streams the stats of 50 containers. Optionally (`--debian`), real
workloads in a Debian image made with `fetch-auto`: apt-get, python3 and node, under the default
profile and unconfined.

Floors are measured in the same run: the same loop with seccomp off (`unconfined`), the same
start without any limit (no default pids limit either), the same daemon idle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import bench_daemon, summary
from tests.wsapi import connect, create_image, exec_stream, run_stream

# read/write pairs through dd: 1-byte blocks are nothing but syscall entries and exits (the worst
# case for seccomp, about 1 s here), 4 KiB blocks a syscall-heavy copy.
SYSCALL_LOOPS = {
    "bs1": ("time sh -c 'dd if=/dev/zero of=/dev/null bs=1 count=2000000 2>/dev/null'", 4_000_000),
    "bs4k": ("time sh -c 'dd if=/dev/zero of=/dev/null bs=4096 count=1000000 2>/dev/null'", 2_000_000),
}
LIMITS = {"memory": 256 << 20, "cpus": 1.0, "cpu_shares": 512, "pids_limit": 512,
          "ulimits": [{"name": "nofile", "soft": 4096, "hard": 8192}]}  # fmt: skip
NO_LIMITS = {"pids_limit": -1}
_TIMES = re.compile(r"real\s+(\d+)m\s*([\d.]+)s\s+user\s+(\d+)m\s*([\d.]+)s\s+sys\s+(\d+)m\s*([\d.]+)s")


def _run(api: Any, daemon: Any, image: str, cmd: list[str], **config: Any) -> str:
    cid = api.post("/containers/create", json={"image": image, "cmd": cmd, "network_driver": "host",
                                               **config}).json()["id"]  # fmt: skip
    stream = exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], timeout=3600)
    api.delete(f"/containers/{cid}")
    assert stream.close_reason and stream.close_reason["message"].endswith("exit-code 0"), stream
    return stream.text


def _cpu_seconds(output: str) -> float:
    """user + sys of `time`'s report (busybox's and bash's formats)."""
    m = _TIMES.search(output)
    assert m, f"no time report in {output[-500:]!r}"
    return int(m.group(3)) * 60 + float(m.group(4)) + int(m.group(5)) * 60 + float(m.group(6))


ALLOW_ALL = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})  # a filter that decides nothing


def seccomp_overhead(api: Any, daemon: Any, image: str, rounds: int) -> dict[str, Any]:
    """CPU seconds of each loop under the default profile, under a filter that allows
    everything, and unconfined, interleaved. Ratios are medians of each round's ratio, which
    cancels most of the machine's load drift. `ratio` is the whole cost of seccomp;
    `profile_ratio` what the default profile adds to the kernel's cost of having any filter."""
    results: dict[str, Any] = {}
    for name, (loop, syscalls) in SYSCALL_LOOPS.items():
        rows = []
        for _ in range(rounds):
            rows.append([_cpu_seconds(_run(api, daemon, image, ["/bin/sh", "-c", loop], seccomp=profile))
                         for profile in ("default", ALLOW_ALL, "unconfined")])  # fmt: skip
        results[name] = {
            "median_cpu_s": round(statistics.median(r[0] for r in rows), 3),
            "allow_all_filter_cpu_s": round(statistics.median(r[1] for r in rows), 3),
            "floor_unconfined_cpu_s": round(statistics.median(r[2] for r in rows), 3),
            "ratio": round(statistics.median(r[0] / r[2] for r in rows if r[2] > 0), 3),
            "profile_ratio": round(statistics.median(r[0] / r[1] for r in rows if r[1] > 0), 3),
            "syscalls": syscalls, "rounds": rounds, "target": "profile_ratio <= 1.05",
        }  # fmt: skip
    return results


def start_cost(api: Any, daemon: Any, image: str, runs: int) -> dict[str, Any]:
    """create + start + exit + remove of `true`: with every limit set, with none at all (no
    default pids limit either), and with none and no seccomp; interleaved, ratios of pairs."""
    variants = {"limits": {"resources": LIMITS}, "none": {"resources": NO_LIMITS},
                "unconfined": {"resources": NO_LIMITS, "seccomp": "unconfined"}}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs + 2):
        for name, config in variants.items():
            t0 = time.perf_counter()
            _run(api, daemon, image, ["/bin/true"], **config)
            if i >= 2:  # warm-up
                times[name].append((time.perf_counter() - t0) * 1000)
    return {**summary(times["limits"]), "floor": summary(times["none"]), "target": "<= 1.10",
            "ratio": round(statistics.median(a / b for a, b in zip(times["limits"], times["none"], strict=True)), 3),
            "seccomp_at_start_ratio": round(statistics.median(
                a / b for a, b in zip(times["none"], times["unconfined"], strict=True)), 3)}  # fmt: skip


def _daemon_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def stats_cpu(api: Any, daemon: Any, image: str, containers: int = 50, seconds: float = 10.0) -> dict[str, Any]:
    """The daemon's CPU (cores) while one client streams the stats of `containers` containers."""
    ids = [api.post("/containers/create", json={"image": image, "cmd": ["/bin/sleep", "3600"],
                                                "network_driver": "host"}).json()["id"] for _ in range(containers)]
    try:
        for cid in ids:
            exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], attach=False)
        pid = daemon.proc.pid
        idle_start = _daemon_cpu_seconds(pid)
        time.sleep(seconds)
        idle = (_daemon_cpu_seconds(pid) - idle_start) / seconds
        frames = 0
        with connect(daemon, "/containers/stats") as ws:
            ws.send(json.dumps({"containers": ids, "interval": 1.0}))
            ws.recv(timeout=10)  # starting
            start, t0 = _daemon_cpu_seconds(pid), time.monotonic()
            while time.monotonic() - t0 < seconds:
                sample = json.loads(ws.recv(timeout=10))
                assert len(sample["containers"]) == containers
                frames += 1
            busy = (_daemon_cpu_seconds(pid) - start) / (time.monotonic() - t0)
        return {"containers": containers, "samples": frames, "daemon_cores": round(busy, 4),
                "floor_idle_cores": round(idle, 4), "per_container_sample_ms": round(busy * 1000 / containers, 3)}
    finally:
        for cid in ids:
            api.post(f"/containers/{cid}/stop")
            api.delete(f"/containers/{cid}")


DEBIAN_SETUP = "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 nodejs >/dev/null"
DEBIAN_WORKLOADS = {
    "python3": "time python3 -c \"import os\nfor i in range(300000): os.stat('/')\"",
    "node": "time node -e \"const fs=require('fs'); for (let i=0;i<300000;i++) fs.statSync('/')\"",
    "apt-get": "time apt-get install -y -qq --reinstall --no-install-recommends python3-minimal >/dev/null",
}


def debian(api: Any, daemon: Any, rounds: int) -> dict[str, Any]:
    """A Debian image from fetch-auto (debootstrap of this host's release); apt-get installs
    python3 and node in a build under the default profile; then each workload, both profiles."""
    import tempfile

    t0 = time.monotonic()
    stream = run_stream(daemon, "/images/create", {"method": "fetch-auto", "tag": "debian:bench"}, timeout=1800)
    assert stream.close_code == 1000, stream.close_reason
    result: dict[str, Any] = {"fetch_auto_s": round(time.monotonic() - t0, 1)}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=daemon.workdir) as context:
        (Path(context) / "Dockerfile").write_text(f"FROM debian:bench\nRUN {DEBIAN_SETUP}\n")
        stream = run_stream(daemon, "/images/build", {"context": context, "tag": "debian:tools",
                                                      "container_config": {"network_driver": "host"}}, timeout=1800)
    assert stream.close_code == 1000, stream.text[-2000:]
    result["apt_get_install_python3_nodejs_s"] = round(time.monotonic() - t0, 1)
    for name, script in DEBIAN_WORKLOADS.items():
        pairs = []
        for _ in range(rounds):
            default = _cpu_seconds(_run(api, daemon, "debian:tools", ["/bin/bash", "-c", script], seccomp="default"))
            floor = _cpu_seconds(_run(api, daemon, "debian:tools", ["/bin/bash", "-c", script], seccomp="unconfined"))
            pairs.append((default, floor))
        result[name] = {"median_cpu_s": round(statistics.median(d for d, _ in pairs), 3),
                        "floor_unconfined_cpu_s": round(statistics.median(f for _, f in pairs), 3),
                        "ratio": round(statistics.median(d / f for d, f in pairs if f > 0), 3)}  # fmt: skip
    return result


def run(rounds: int = 7, runs: int = 20, with_debian: bool = False) -> dict[str, Any]:
    with bench_daemon() as daemon, daemon.client() as api:
        image = create_image(daemon, tag="isobench")
        results: dict[str, Any] = {
            "seccomp_syscall_loop": seccomp_overhead(api, daemon, image, rounds),
            "limits_at_start": start_cost(api, daemon, image, runs),
            "stats_50_containers": stats_cpu(api, daemon, image),
        }
        if with_debian:
            results["debian"] = debian(api, daemon, max(3, rounds // 2))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--debian", action="store_true", help="also debootstrap a Debian image (minutes, network)")
    args = parser.parse_args()
    print(json.dumps(run(with_debian=args.debian), indent=2))
