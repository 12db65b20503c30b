"""Shared helpers: timing, statistics, a daemon and a raw runc bundle on the same rootfs."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.daemon import Daemon, running_daemon
from tests.rootfs import session_rootfs


def measure(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Wall-clock milliseconds of `runs` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered), 2), "p90_ms": round(ordered[int(len(ordered) * 0.9)], 2),
            "min_ms": round(ordered[0], 2)}


@contextlib.contextmanager
def bench_daemon() -> Iterator[Daemon]:
    # Benchmarks want the daemon's own cost, not that of the tests' debug logging.
    with (
        tempfile.TemporaryDirectory(prefix="kleened-bench-") as tmp,
        running_daemon(Path(tmp), extra={"log_level": "info"}) as daemon,
    ):
        yield daemon


class RawRunc:
    """A runc bundle on an overlay of the same busybox rootfs: the floor for container runs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.name = f"raw{secrets.token_hex(4)}"  # also its cgroup's name: unique per run
        self.lower = session_rootfs(workdir)
        self.root = workdir / "runc-root"
        self.bundle = workdir / "raw-bundle"
        for sub in ("upper", "work", "rootfs"):
            (self.bundle / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={self.bundle}/upper,workdir={self.bundle}/work",
                        str(self.bundle / "rootfs")], check=True)
        subprocess.run(["runc", "spec"], cwd=self.bundle, check=True)
        config = json.loads((self.bundle / "config.json").read_text())
        config["root"] = {"path": "rootfs", "readonly": False}
        config["process"]["terminal"] = False
        # Host network, as the daemon's containers in this benchmark.
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
        self.config = config

    def write(self, args: list[str]) -> None:
        self.config["process"]["args"] = args
        (self.bundle / "config.json").write_text(json.dumps(self.config))

    def runc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["runc", "--root", str(self.root), *args], capture_output=True, check=True, **kw)

    def close(self) -> None:
        subprocess.run(["runc", "--root", str(self.root), "delete", "-f", self.name], capture_output=True)
        subprocess.run(["umount", str(self.bundle / "rootfs")], check=False)
        shutil.rmtree(self.bundle, ignore_errors=True)


def env_without_klee() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
