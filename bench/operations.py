"""Restart policies and healthchecks: what an automatic restart adds to its back-off, and what a
healthcheck probe costs, each against its floor measured in the same run.

- `restart`: an `always` container whose command exits at once; the time from its `die` event to
  the `start` event of its first restart, minus the 100 ms back-off, against the floor of a
  user's detached start of the same stopped container through the API (exec create + start).
- `probe`: the duration of `CMD /bin/true` probes as the health log records them (start to end),
  against raw `runc exec` of `/bin/true` in a running container on the same rootfs; `api_exec`
  beside it is a client's exec of the same command through the API (exec create + `/exec/start`).
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime

from bench.common import RawRunc, bench_daemon, measure, summary
from tests.wsapi import connect, create_image, exec_stream

FIRST_DELAY_MS = 100.0


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _restart_overheads(daemon, api, image: str, runs: int) -> list[float]:
    overheads = []
    for _ in range(runs):
        cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sh", "-c", "exit 1"],
                                                   "network_driver": "host", "restart_policy": "always"}).json()["id"]
        with connect(daemon, "/events") as events:
            events.send(json.dumps({"filters": {"object": [cid], "event": ["die", "start"]}}))
            events.recv(timeout=10)  # the starting frame
            eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
            exec_stream(daemon, eid, attach=False)
            seen: list[dict] = []
            while [e["action"] for e in seen][-3:] != ["start", "die", "start"]:
                seen.append(json.loads(events.recv(timeout=30)))
        api.post(f"/containers/{cid}/stop")
        api.delete(f"/containers/{cid}")
        die, restart = seen[-2], seen[-1]
        overheads.append((restart["time_nano"] - die["time_nano"]) / 1e6 - FIRST_DELAY_MS)
    return overheads


def _probe_times(daemon, api, image: str, probes: int) -> list[float]:
    check = {"test": ["CMD", "/bin/true"], "interval": 0.05, "timeout": 10.0, "retries": 3}
    cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sleep", "1000"], "network_driver": "host",
                                               "healthcheck": check}).json()["id"]
    exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], attach=False)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(seen) < probes and time.monotonic() < deadline:
        for r in api.get(f"/containers/{cid}/inspect").json()["container"]["health"]["log"]:
            seen[r["start"]] = (_stamp(r["end"]) - _stamp(r["start"])) * 1000
        time.sleep(0.1)
    api.post(f"/containers/{cid}/stop")
    api.delete(f"/containers/{cid}")
    return list(seen.values())[:probes]


def run(runs: int = 15) -> dict[str, object]:
    with bench_daemon() as daemon, daemon.client() as api:
        image = create_image(daemon, tag="opsbox")
        cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/true"],
                                                   "network_driver": "host"}).json()["id"]

        floor_start = []
        for _ in range(runs + 2):  # the first two warm up
            t0 = time.perf_counter()
            exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], attach=False)
            floor_start.append((time.perf_counter() - t0) * 1000)
            while api.get(f"/containers/{cid}/inspect").json()["container"]["running"]:  # untimed: it exits
                time.sleep(0.005)
        floor_start = floor_start[2:]
        api.delete(f"/containers/{cid}")
        restart = _restart_overheads(daemon, api, image, runs)
        raw = RawRunc(daemon.workdir)
        try:
            raw.write(["/bin/sleep", "1000"])
            subprocess.run(["runc", "--root", str(raw.root), "run", "-d", "-b", str(raw.bundle), raw.name],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            floor_exec = measure(lambda: raw.runc("exec", raw.name, "/bin/true"), runs * 2)
        finally:
            raw.close()
        probe = _probe_times(daemon, api, image, runs * 2)
        running = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sleep", "1000"],
                                                       "network_driver": "host"}).json()["id"]
        exec_stream(daemon, api.post("/exec/create", json={"container_id": running}).json()["id"], attach=False)
        api_exec = measure(lambda: exec_stream(daemon, api.post("/exec/create", json={
            "container_id": running, "cmd": ["/bin/true"]}).json()["id"], start_container=False), runs * 2)
        api.post(f"/containers/{running}/stop")
        api.delete(f"/containers/{running}")
    results: dict[str, object] = {
        "restart": {**summary(restart), "floor": summary(floor_start)},
        "probe": {**summary(probe), "floor": summary(floor_exec), "api_exec": summary(api_exec)},
    }
    for entry in results.values():
        entry["ratio"] = round(entry["median_ms"] / entry["floor"]["median_ms"], 2)  # type: ignore[index]
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
