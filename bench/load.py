"""Load: C clients at once (threads, one connection each), each doing K cycles of create, start
`echo hi` and wait for its exit, delete; through kleened's API, and through Docker's API on the
same machine when docker is available (bench.peers' own dockerd: no bridge, no iptables).

Reported per system: cycles/s over the whole run, p50/p99 of a cycle and of its start (start to
exit), errors (a failed cycle counts once and the client goes on), and kleened's RSS before and
after. `python -m bench.load [--clients 50] [--cycles 20]` prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import bench_daemon
from bench.peers import docker_host
from bench.scale import rss_kb
from tests.daemon import Daemon
from tests.rootfs import session_tarball
from tests.wsapi import create_image, exec_stream

Cycle = Callable[[], float]  # one cycle; returns the seconds its start took


def kleened_cycle(daemon: Daemon) -> Callable[[], Cycle]:
    def client() -> Cycle:
        api = daemon.client(timeout=300)

        def cycle() -> float:
            cid = api.post("/containers/create", json={"image": "bb", "cmd": ["/bin/echo", "hi"],
                                                       "network_driver": "disabled"}).json()["id"]
            t0 = time.perf_counter()
            eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
            stream = exec_stream(daemon, eid, timeout=300)
            started = time.perf_counter() - t0
            assert stream.text == "hi\n", stream
            api.delete(f"/containers/{cid}").raise_for_status()
            return started

        return cycle

    return client


def docker_cycle(host: str) -> Callable[[], Cycle]:
    socket_path = host.removeprefix("unix://")

    def client() -> Cycle:
        api = httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), base_url="http://docker/v1.41",
                           timeout=300)

        def cycle() -> float:
            created = api.post("/containers/create", json={"Image": "kbench-bb", "Cmd": ["echo", "hi"],
                                                           "HostConfig": {"NetworkMode": "none"}})
            created.raise_for_status()
            cid = created.json()["Id"]
            t0 = time.perf_counter()
            api.post(f"/containers/{cid}/start").raise_for_status()
            waited = api.post(f"/containers/{cid}/wait")
            started = time.perf_counter() - t0
            assert waited.json()["StatusCode"] == 0, waited.text
            api.delete(f"/containers/{cid}").raise_for_status()
            return started

        return cycle

    return client


def drive(make_client: Callable[[], Cycle], clients: int, cycles: int) -> dict[str, object]:
    cycle_s: list[float] = []
    start_s: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients)

    def worker() -> None:
        cycle = make_client()
        ready.wait()  # every client connected before the clock runs
        for _ in range(cycles):
            t0 = time.perf_counter()
            try:
                started = cycle()
            except Exception as exc:  # counted and reported; the client goes on
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                cycle_s.append(time.perf_counter() - t0)
                start_s.append(started)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - t0
    return {
        "cycles": len(cycle_s), "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 1),
        "cycles_per_s": round(len(cycle_s) / wall, 2),
        "cycle_ms": percentiles(cycle_s), "start_ms": percentiles(start_s),
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 1)}


def run(clients: int = 50, cycles: int = 20) -> dict[str, object]:
    results: dict[str, object] = {"clients": clients, "cycles_per_client": cycles}
    with bench_daemon() as daemon, contextlib.ExitStack() as stack:
        create_image(daemon, tag="bb")
        rss_before = rss_kb(daemon.pid)
        results["kleened"] = drive(kleened_cycle(daemon), clients, cycles)
        results["kleened"]["rss_mb"] = [round(rss_before / 1024, 1), round(rss_kb(daemon.pid) / 1024, 1)]
        host = stack.enter_context(docker_host(daemon.workdir))
        if host:
            env = {**os.environ, "DOCKER_HOST": host}
            subprocess.run(["docker", "import", str(session_tarball(daemon.workdir)), "kbench-bb:latest"], check=True,
                           capture_output=True, env=env)
            try:
                results["docker"] = drive(docker_cycle(host), clients, cycles)
            finally:
                subprocess.run(["docker", "rmi", "-f", "kbench-bb"], capture_output=True, env=env)
            results["cycles_per_s_ratio_kleened_vs_docker"] = round(
                results["kleened"]["cycles_per_s"] / max(results["docker"]["cycles_per_s"], 0.001), 2)
    results["load_average"] = os.getloadavg()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20)
    arguments = parser.parse_args()
    print(json.dumps(run(arguments.clients, arguments.cycles), indent=2))
