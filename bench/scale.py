"""The cost curve with N running containers (busybox `sleep`, no network, own daemon): daemon
RSS per container, `GET /containers/list` latency, a new container's create+start+exit+delete
at N against the same at the first level, `klee container ls` wall time, and at the largest N
the time from a kill -9 of kleened to a restarted daemon that lists all N running again.

`python -m bench.scale [--levels 10,100,500] [--runs N]` prints JSON. Levels are cumulative:
the containers of one level stay for the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import bench_daemon, env_without_klee, measure, summary
from tests.daemon import ROOT, Daemon
from tests.wsapi import create_image, exec_stream

KLEE = [str(ROOT / ".venv/bin/klee")] if (ROOT / ".venv/bin/klee").exists() else [sys.executable, "-m", "klee"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_sleeper(daemon: Daemon, api: httpx.Client) -> str:
    cid = api.post("/containers/create", json={"image": "bb", "cmd": ["/bin/sleep", "100000"],
                                               "network_driver": "disabled"}).json()["id"]
    stream = exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], attach=False)
    assert stream.close_code == 1001, stream
    return cid


def one_run(daemon: Daemon, api: httpx.Client) -> None:
    """A new container's whole life: create, start `echo`, wait for its exit, delete."""
    cid = api.post("/containers/create", json={"image": "bb", "cmd": ["/bin/echo", "hi"],
                                               "network_driver": "disabled"}).json()["id"]
    assert exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"]).text == "hi\n"
    api.delete(f"/containers/{cid}").raise_for_status()


def level(daemon: Daemon, api: httpx.Client, n: int, rss0: int, runs: int) -> dict[str, object]:
    def list_all() -> None:
        assert len(api.get("/containers/list", params={"all": "true"}).json()) == n

    env = {**env_without_klee(), "KLEE_HOST": daemon.host}
    klee_ls = [*KLEE, "container", "ls"]
    rss = rss_kb(daemon.pid)
    return {
        "running": n,
        "daemon_rss_mb": round(rss / 1024, 1),
        "rss_per_container_kb": round((rss - rss0) / n, 1),
        "list_ms": summary(measure(list_all, runs * 2)),
        "new_container_ms": summary(measure(lambda: one_run(daemon, api), runs)),
        "klee_container_ls_ms": summary(measure(
            lambda: subprocess.run(klee_ls, check=True, capture_output=True, env=env), runs)),
    }


def restart_to_serving(daemon: Daemon, n: int) -> dict[str, object]:
    """kill -9, start again, until `/containers/list?all=true` answers with the n containers.

    kleened does not adopt containers a killed daemon left running: reconcile stops them (and
    restart policies start them again), so the figure is the time to a serving daemon with
    its n containers reconciled."""
    daemon.kill()
    t0 = time.perf_counter()
    daemon.start(timeout=300)
    with daemon.client(timeout=120) as api:
        deadline = time.monotonic() + 300
        while len(listed := api.get("/containers/list", params={"all": "true"}).json()) < n:
            assert time.monotonic() < deadline, "the restarted daemon never listed every container"
            time.sleep(0.02)
    return {"containers": n, "seconds": round(time.perf_counter() - t0, 2),
            "still_running": sum(1 for c in listed if c["running"])}


def remove_all(daemon: Daemon, ids: list[str]) -> None:
    def remove(cid: str) -> None:
        with daemon.client(timeout=120) as api:
            api.post(f"/containers/{cid}/stop")  # 409 when reconcile stopped it already
            api.delete(f"/containers/{cid}").raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(remove, ids))


def run(levels: tuple[int, ...] = (10, 100), runs: int = 5) -> dict[str, object]:
    results: dict[str, object] = {"levels": []}
    with bench_daemon() as daemon:
        ids: list[str] = []
        try:
            with daemon.client(timeout=120) as api:
                create_image(daemon, tag="bb")
                api.get("/containers/list")
                rss0 = rss_kb(daemon.pid)
                results["daemon_rss_idle_mb"] = round(rss0 / 1024, 1)
                for n in levels:
                    t0 = time.perf_counter()
                    while len(ids) < n:
                        ids.append(start_sleeper(daemon, api))
                    entry = level(daemon, api, n, rss0, runs)
                    entry["started_in_s"] = round(time.perf_counter() - t0, 1)
                    results["levels"].append(entry)
            first, last = results["levels"][0], results["levels"][-1]
            results["new_container_ratio_last_vs_first"] = round(
                last["new_container_ms"]["median_ms"] / first["new_container_ms"]["median_ms"], 2)
            print(json.dumps(results), file=sys.stderr)  # the curve, in case the restart below fails
            results["restart_to_serving"] = restart_to_serving(daemon, len(ids))
        finally:
            remove_all(daemon, ids)
    results["load_average"] = os.getloadavg()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,100", help="comma-separated numbers of running containers")
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    print(json.dumps(run(tuple(int(n) for n in arguments.levels.split(",")), arguments.runs), indent=2))
