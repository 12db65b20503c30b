"""Container paths: create + attached run, and exec, through the API and through klee, against
raw runc (the floor) on the same rootfs and machine, in one run."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import RawRunc, bench_daemon, env_without_klee, measure, summary
from tests.daemon import ROOT
from tests.wsapi import create_image, exec_stream

KLEE = [sys.executable, "-m", "klee"] if not (ROOT / ".venv/bin/klee").exists() else [str(ROOT / ".venv/bin/klee")]
PODMAN_RUN_RM_ANCHOR_MS = 141.0  # podman run --rm, median measured on this machine class


def run(runs: int = 30) -> dict[str, object]:
    results: dict[str, object] = {}
    with bench_daemon() as daemon, daemon.client() as api:
        image = create_image(daemon, tag="benchbox")
        raw = RawRunc(daemon.workdir)
        try:
            raw.write(["/bin/echo", "hi"])
            floor_run = measure(lambda: raw.runc("run", "-b", str(raw.bundle), raw.name, stdin=subprocess.DEVNULL),
                                runs)

            def api_run() -> None:
                cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/echo", "hi"],
                                                           "network_driver": "host"}).json()["id"]
                eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
                stream = exec_stream(daemon, eid)
                assert stream.text == "hi\n", stream
                api.delete(f"/containers/{cid}")

            api_run_times = measure(api_run, runs)

            raw.write(["/bin/sleep", "1000"])
            subprocess.run(["runc", "--root", str(raw.root), "run", "-d", "-b", str(raw.bundle), raw.name],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            floor_exec = measure(lambda: raw.runc("exec", raw.name, "/bin/echo", "hi"), runs)

            cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sleep", "1000"],
                                                       "network_driver": "host"}).json()["id"]
            exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"], attach=False)

            def api_exec() -> None:
                eid = api.post("/exec/create", json={"container_id": cid, "cmd": ["/bin/echo", "hi"]}).json()["id"]
                assert exec_stream(daemon, eid, start_container=False).text == "hi\n"

            api_exec_times = measure(api_exec, runs)
            results["api_run"] = {**summary(api_run_times), "floor": summary(floor_run)}
            results["api_exec"] = {**summary(api_exec_times), "floor": summary(floor_exec)}
            for key in ("api_run", "api_exec"):
                entry = results[key]
                entry["ratio"] = round(entry["median_ms"] / entry["floor"]["median_ms"], 2)

            klee = [*KLEE, "--host", daemon.host]
            env = env_without_klee()
            klee_run = measure(lambda: subprocess.run([*klee, "run", "--rm", image, "/bin/echo", "hi"], check=True,
                                                      capture_output=True, env=env), max(10, runs // 3))
            klee_exec = measure(lambda: subprocess.run([*klee, "exec", cid, "/bin/echo", "hi"], check=True,
                                                       capture_output=True, env=env), max(10, runs // 3))
            results["klee_run_rm"] = {**summary(klee_run), "podman_anchor_ms": PODMAN_RUN_RM_ANCHOR_MS}
            results["klee_exec"] = summary(klee_exec)  # podman and docker side by side: bench.peers
            api.post(f"/containers/{cid}/stop")
            api.delete(f"/containers/{cid}")
        finally:
            raw.close()
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
