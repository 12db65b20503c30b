"""Restart to serving with live restore: kleened killed (-9) with N containers running, then
started again; the time from its launch until it answers `/version` and lists all N running
(adopted, nothing restarted). The floor is the same with no container, in the same run.

Also the monitors' memory at the largest N (PSS and RSS per conmon, from /proc smaps_rollup).

`python -m bench.restart [N ...]` (default 0 100 500); `--without-live-restore [N]`: the same
kill -9 and launch with live restore off (start-up stops the N containers), one round.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import summary
from bench.monitor import memory_of, memory_summary
from tests.daemon import Daemon, running_daemon
from tests.wsapi import create_image, exec_stream

STARTERS = 4  # containers started at once while setting up
POLL = 0.005  # seconds between readiness probes


def start_containers(daemon: Daemon, image: str, count: int) -> list[str]:
    def one(_: int) -> str:
        with daemon.client() as api:
            cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sleep", "100000"],
                                                       "network_driver": "host"}).json()["id"]
            eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
            assert exec_stream(daemon, eid, attach=False).close_code == 1001
            return cid

    with concurrent.futures.ThreadPoolExecutor(STARTERS) as pool:
        return list(pool.map(one, range(count)))


def restart_to_serving(daemon: Daemon, expected: int) -> dict[str, float]:
    """kill -9, launch, and time until it serves and lists `expected` running containers."""
    daemon.kill()
    daemon.write_config()
    with daemon.log_path.open("ab") as log:
        began = time.monotonic()
        daemon.proc = subprocess.Popen([sys.executable, "-m", "kleened", "--config", str(daemon.config_path)],
                                       stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    served = listed = None
    deadline = began + 300
    while listed is None:
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        assert daemon.proc.poll() is None, daemon.log()[-3000:]
        with contextlib.suppress(httpx.TransportError), daemon.client(timeout=30) as api:
            if served is None and api.get("/version").status_code == 200:
                served = time.monotonic()
            if served is not None:
                running = sum(c["running"] for c in api.get("/containers/list").json())
                if running == expected:
                    listed = time.monotonic()
                    break
        time.sleep(POLL)
    assert served is not None
    return {"serving_s": round(served - began, 3), "all_adopted_s": round(listed - began, 3)}


def without_live_restore(count: int) -> dict[str, float]:
    """The same kill -9 and launch without live restore (one round): start-up stops and cleans
    up every container, then serves; timed until it lists none running."""
    with tempfile.TemporaryDirectory(prefix="kleened-bench-") as tmp, \
            running_daemon(Path(tmp), extra={"log_level": "info"}) as daemon:
        image = create_image(daemon, tag="benchbox")
        cids = start_containers(daemon, image, count)
        result = restart_to_serving(daemon, 0)
        with daemon.client(timeout=120) as api:
            for cid in cids:
                api.delete(f"/containers/{cid}")
    return {"containers": count, "serving_ms": result["serving_s"] * 1000}


def monitors_memory(daemon: Daemon) -> dict[str, float]:
    pids = [int(p.read_text()) for p in (daemon.state_root / "bundles").glob("*/conmon.pid")]
    return memory_summary([memory_of(pid) for pid in pids])


def run(counts: tuple[int, ...] = (0, 100, 500), rounds: int = 3) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kleened-bench-") as tmp, \
            running_daemon(Path(tmp), extra={"log_level": "info", "live_restore": True}) as daemon:
        image = create_image(daemon, tag="benchbox")
        running: list[str] = []
        for count in sorted(counts):
            running += start_containers(daemon, image, count - len(running))
            samples = [restart_to_serving(daemon, count) for _ in range(rounds)]
            results[str(count)] = {key: summary([s[key] * 1000 for s in samples])
                                   for key in ("serving_s", "all_adopted_s")}
        results["monitor_memory_kb"] = monitors_memory(daemon)
        results["monitor_memory_kb"]["containers"] = len(running)
        floor = results[str(min(counts))]["all_adopted_s"]["median_ms"]
        for count in counts:
            entry = results[str(count)]
            entry["ratio_to_floor"] = round(entry["all_adopted_s"]["median_ms"] / floor, 2)
        with daemon.client(timeout=120) as api:
            for cid in running:
                api.post(f"/containers/{cid}/stop")
                api.delete(f"/containers/{cid}")
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--without-live-restore"]:
        print(json.dumps(without_live_restore(int(sys.argv[2]) if len(sys.argv) > 2 else 100), indent=2))
    else:
        wanted = tuple(int(a) for a in sys.argv[1:]) or (0, 100, 500)
        print(json.dumps(run(wanted), indent=2))
