"""The per-container monitor (conmon): its memory, its log throughput and the start latency it adds.

Driver level, no daemon: the Linux drivers on a temporary state dir, busybox rootfs on overlay.
- memory: `CONTAINERS` `sleep` containers under conmon; RSS and PSS of each monitor from
  /proc/<pid>/smaps_rollup (PSS divides shared pages among the processes mapping them, so it
  is what one more container costs). Against it, the floor of a monitor written in Python: a
  bare interpreter with the modules such a monitor needs imported (selectors, socket, json),
  as many of them side by side.
- log throughput: a container writing `LINES` lines as fast as it can, its output logged by
  conmon (with an attach client reading every packet, as kleened's tap would, and without),
  timed from `runc start` to the exit status; the floor is the same writer under raw
  `runc run` into a pipe read by Python (`bench.streams.floor`). Every line is checked in the log.
- start latency: create + start of `sleep` under conmon against today's path, `runc run -d`
  with pipes (`RuncRuntime.start`), alternated, `RUNS` each.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import RawRunc, summary
from bench.streams import LINE, LINES, WRITER, floor, rates
from kleened.platform.base import ContainerSpec, ProcessSpec
from kleened.platform.linux import reaper
from kleened.platform.linux.conmon import ConmonMonitors, Monitored
from kleened.platform.linux.monitorspec import MonitorOptions
from kleened.platform.linux.overlay import OverlayStorage
from kleened.platform.linux.runc import RuncRuntime
from tests import rootfs

CONTAINERS = 50
RUNS = 15
LOG_RUNS = 3
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
PYTHON_MONITOR = "import selectors, socket, json, os, signal, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); " \
                 "signal.pause()"


def memory_of(pid: int) -> dict[str, int]:
    """RSS and PSS of `pid` in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return {"rss_kb": fields["Rss"], "pss_kb": fields["Pss"], "anon_kb": fields["Anonymous"]}


def memory_summary(samples: list[dict[str, int]]) -> dict[str, float]:
    return {f"{key}_median": statistics.median(s[key] for s in samples) for key in samples[0]}


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.storage = OverlayStorage(workdir / "state")
        self.runtime = RuncRuntime(workdir / "run", f"kb{os.getpid() % 100000}")
        self.monitors = ConmonMonitors(self.runtime)
        self.logs = workdir / "logs"
        self.logs.mkdir(mode=0o700)
        self.base = ""
        self._count = 0

    async def setup(self) -> None:
        layer_id, path = await self.storage.create_layer()
        rootfs.build(path)
        self.base = layer_id

    async def spec(self, args: list[str]) -> ContainerSpec:
        self._count += 1
        cid = f"b{self._count:05d}{os.getpid() % 100000:05d}"
        await self.storage.create_container_fs(cid)
        root = await self.storage.mount_container_fs(cid, [self.base])
        return ContainerSpec(id=cid, rootfs=root, hostname=cid, process=ProcessSpec(args=args, env=ENV))

    def options(self, cid: str, log_size_max: int = 10 * 2**20) -> MonitorOptions:
        return MonitorOptions(log_path=self.logs / f"{cid}.log", log_size_max=log_size_max)

    async def monitored(self, args: list[str], log_size_max: int = 10 * 2**20) -> Monitored:
        spec = await self.spec(args)
        container = await self.monitors.create(spec, self.options(spec.id, log_size_max))
        await self.monitors.start(container)
        return container

    async def remove(self, cid: str, container: Monitored | None = None) -> None:
        await self.monitors.delete(cid, container)
        await self.storage.remove_container_fs(cid)
        (self.logs / f"{cid}.log").unlink(missing_ok=True)

    # --- memory -----------------------------------------------------------------------------

    async def memory(self) -> dict[str, Any]:
        containers = [await self.monitored(["sleep", "100000"]) for _ in range(CONTAINERS)]
        try:
            samples = [memory_of(c.monitor_pid) for c in containers if c.monitor_pid]
        finally:
            for container in containers:
                await self.remove(container.container_id, container)
        return {"containers": CONTAINERS, "conmon": memory_summary(samples),
                "conmon_pss_total_kb": sum(s["pss_kb"] for s in samples),
                "python_monitor_floor": python_floor()}

    # --- throughput ---------------------------------------------------------------------------

    async def log_run(self, attached: bool) -> dict[str, Any]:
        """Capture rate, timed as the floor is: from the first output conmon read to the last
        (the stamps of the first and last log records; the attach client's first and last
        packet when attached), plus start-to-exit-status wall time."""
        spec = await self.spec(["/bin/sh", "-c", WRITER])
        container = await self.monitors.create(spec, self.options(spec.id, 2**30))
        received = 0
        first = last = 0.0
        try:
            conn = await container.attach() if attached else None
            t0 = time.perf_counter()
            await self.monitors.start(container)
            if conn is not None:
                while (packet := await conn.receive()) is not None:
                    last = time.perf_counter()
                    first = first or last
                    received += len(packet[1])
                conn.close()
            status = await container.wait()
            wall = time.perf_counter() - t0
            assert status.code == 0, status
            records, first_stamp, last_stamp = count_full_lines(container.options.log_path)
            assert records == LINES, records
            if attached:
                assert received == LINES * (len(LINE) + 1), received
            else:
                first, last = first_stamp, last_stamp
        finally:
            await self.remove(spec.id, container)
        nbytes = LINES * (len(LINE) + 1)
        return {**rates(LINES, nbytes, last - first), "start_to_exit_status": rates(LINES, nbytes, wall)}

    # --- start latency ----------------------------------------------------------------------

    async def start_monitored(self) -> float:
        spec = await self.spec(["sleep", "100000"])
        t0 = time.perf_counter()
        container = await self.monitors.create(spec, self.options(spec.id))
        await self.monitors.start(container)
        took = time.perf_counter() - t0
        await self.remove(spec.id, container)
        return took * 1000

    async def start_runc(self) -> float:
        spec = await self.spec(["sleep", "100000"])
        t0 = time.perf_counter()
        proc = await self.runtime.run(spec)
        took = time.perf_counter() - t0
        await self.runtime.kill(spec.id, signal.SIGKILL)
        await proc.wait()
        await proc.aclose()
        await self.runtime.delete(spec.id)
        await self.storage.remove_container_fs(spec.id)
        return took * 1000

    async def start_latency(self) -> dict[str, Any]:
        await self.start_runc()  # warm caches
        await self.start_monitored()
        runc_ms, conmon_ms = [], []
        for _ in range(RUNS):
            runc_ms.append(await self.start_runc())
            conmon_ms.append(await self.start_monitored())
        floor_ms, ours = summary(runc_ms), summary(conmon_ms)
        return {"runc_run_detached": floor_ms, "conmon_create_start": ours,
                "added_ms_median": round(ours["median_ms"] - floor_ms["median_ms"], 1),
                "ratio": round(ours["median_ms"] / floor_ms["median_ms"], 2)}


def count_full_lines(path: Path) -> tuple[int, float, float]:
    """The stdout `F` records of a conmon log, and its first and last stamps (unix seconds)."""
    count, first, last = 0, b"", b""
    with open(path, "rb") as f:
        for record in f:
            first = first or record
            last = record
            count += record[35:45] == b" stdout F "
    return count, _stamp(first), _stamp(last)


def _stamp(record: bytes) -> float:
    """conmon's `2026-12-07T01:05:56.813200976+00:00` as unix seconds."""
    seconds = datetime.datetime.fromisoformat(record[:19].decode() + "+00:00").timestamp()
    return seconds + int(record[20:29]) / 1e9


def python_floor() -> dict[str, Any]:
    """`CONTAINERS` idle Python processes with a monitor's imports: the least a Python monitor costs."""
    procs = [subprocess.Popen([sys.executable, "-S", "-c", PYTHON_MONITOR], stdout=subprocess.PIPE)
             for _ in range(CONTAINERS)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        samples = [memory_of(proc.pid) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return memory_summary(samples)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every run's rate beside it."""
    ordered = sorted(runs, key=lambda r: r["lines_per_s"])
    return {**ordered[len(ordered) // 2], "lines_per_s_all": [r["lines_per_s"] for r in runs]}


def raw_floor(workdir: Path) -> dict[str, Any]:
    raw = RawRunc(workdir)
    try:
        return floor(raw)
    finally:
        raw.close()


def run() -> dict[str, Any]:
    """Memory, start latency and log capture, each alternated with its floor."""
    reaper.become_subreaper()  # as kleened: monitors and `runc run -d` inits are our children
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kb-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        bench = Bench(workdir)

        async def main() -> None:
            await bench.setup()
            try:
                results["memory"] = await bench.memory()
                results["start_latency"] = await bench.start_latency()
                runs: dict[str, list[dict[str, Any]]] = {"floor_raw_pipe": [], "log_capture": [],
                                                          "log_capture_attached": []}
                for _ in range(LOG_RUNS):  # alternated: the machine is shared and its load moves
                    runs["floor_raw_pipe"].append(await trio.to_thread.run_sync(raw_floor, workdir))
                    runs["log_capture"].append(await bench.log_run(attached=False))
                    runs["log_capture_attached"].append(await bench.log_run(attached=True))
                for key, values in runs.items():
                    results[key] = median_run(values)
            finally:
                await bench.runtime.close()
                await bench.storage.remove_layer(bench.base)

        trio.run(main)
    floor_rate = results["floor_raw_pipe"]["lines_per_s"]
    for key in ("log_capture", "log_capture_attached"):
        results[key]["vs_floor"] = round(results[key]["lines_per_s"] / floor_rate, 3)
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
