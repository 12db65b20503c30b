"""`cp` of a 100 MB file into and out of a stopped container with klee (a WebSocket stream, the
chrooted copy helper, the mount of the container's filesystem included), against its floor: the
same file through `tar -c | tar -x` on the host, between the same directories. Alternated, 3
runs each, medians; the ratio is what to compare."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import bench_daemon
from tests.wsapi import create_image

MiB = 1024 * 1024
SIZE = 100 * MiB
RUNS = 3


def _timed(argv: list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, **kw)
    return (time.perf_counter() - t0) * 1000


def _tar_pipe(src_dir: Path, name: str, dest: Path) -> float:
    t0 = time.perf_counter()
    pack = subprocess.Popen(["tar", "-C", str(src_dir), "-cf", "-", name], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(dest), "-xf", "-"], stdin=pack.stdout, check=True)
    assert pack.wait() == 0
    return (time.perf_counter() - t0) * 1000


def run() -> dict[str, object]:
    with bench_daemon() as daemon:
        work = daemon.workdir / "cp-bench"
        (work / "src").mkdir(parents=True)
        with open(work / "src/big", "wb") as f:
            for i in range(SIZE // MiB):
                f.write(os.urandom(16) * (MiB // 16) if i % 2 else bytes([i % 251]) * MiB)
        image = create_image(daemon, tag="cpbench")
        with daemon.client() as api:
            r = api.post("/containers/create", json={"image": image, "cmd": ["/bin/true"], "name": "cpb",
                                                    "network_driver": "disabled"})
            assert r.status_code == 201, r.text
        klee = [sys.executable, "-m", "klee", "--host", daemon.host]
        env = {**os.environ, "HOME": "/nonexistent"}
        into, out, floor_in, floor_out = [], [], [], []
        for i in range(RUNS):
            into.append(_timed([*klee, "cp", str(work / "src/big"), f"cpb:/big{i}"], env=env))
            target = work / f"out{i}"
            target.mkdir()
            out.append(_timed([*klee, "cp", f"cpb:/big{i}", str(target / "big")], env=env))
            assert (target / "big").stat().st_size == SIZE
            upper = daemon.state_root / "containers" / json.loads(
                subprocess.run([*klee, "isc", "cpb"], env=env, capture_output=True, check=True).stdout
            )["container"]["id"] / "upper"
            floor_dir = upper / f"floor{i}"
            floor_dir.mkdir()
            floor_in.append(_tar_pipe(work / "src", "big", floor_dir))
            back = work / f"floor-out{i}"
            back.mkdir()
            floor_out.append(_tar_pipe(floor_dir, "big", back))
            shutil.rmtree(target)
            shutil.rmtree(back)
        subprocess.run([*klee, "rmc", "cpb"], env=env, capture_output=True, check=True)
    med = statistics.median
    return {
        "cp_in_100mb": {"median_ms": round(med(into), 1), "floor_ms": round(med(floor_in), 1),
                        "ratio": round(med(into) / med(floor_in), 2)},
        "cp_out_100mb": {"median_ms": round(med(out), 1), "floor_ms": round(med(floor_out), 1),
                         "ratio": round(med(out) / med(floor_out), 2)},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
