"""Log and attach throughput: a container writing lines as fast as it can, captured to its log,
followed by `klee logs -f` and by an attached client, against the same writer into a raw pipe.

Floor: `runc run` of the same command on the same rootfs, stdout a pipe read by Python in
64 KiB reads. Figures: lines/s and MB/s of the container (start signal to its `die` event), of
the follower (to its last line) and of the attached client, and the daemon's CPU over the run
(utime + stime of kleened, from /proc/<pid>/stat, all threads), in cores. Also: the log writer
alone, in-process, writing its batches from a worker thread versus on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import RawRunc, env_without_klee
from tests.daemon import ROOT, Daemon, running_daemon
from tests.wsapi import connect, create_image, exec_stream

LINES = 1_000_000
LINE = "0123456789" * 4  # 41 bytes with its newline
WRITER = f"yes {LINE} | head -n {LINES}"
KLEE = [str(ROOT / ".venv/bin/klee")] if (ROOT / ".venv/bin/klee").exists() else [sys.executable, "-m", "klee"]
TICK = os.sysconf("SC_CLK_TCK")
# 1M lines are 82 MB on disk: keep them all (20 x 10 MiB), so the follower's rate is measured to the
# end instead of it being told it fell behind the default 50 MiB (which is what a follower slower
# than the writer for that long gets).
RETAINED_FILES = 20


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat(5))


def rates(lines: int, nbytes: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "lines_per_s": round(lines / seconds),
            "mb_per_s": round(nbytes / seconds / 1e6, 1)}


def floor(raw: RawRunc) -> dict[str, Any]:
    """The same writer in raw runc, stdout to a pipe: timed from its first byte to EOF."""
    raw.write(["/bin/sh", "-c", WRITER])
    proc = subprocess.Popen(["runc", "--root", str(raw.root), "run", "-b", str(raw.bundle), raw.name],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.read1(65536)
    t0 = time.perf_counter()
    total, newlines = len(first), first.count(b"\n")
    while chunk := proc.stdout.read1(65536):
        total += len(chunk)
        newlines += chunk.count(b"\n")
    elapsed = time.perf_counter() - t0
    proc.wait()
    assert newlines == LINES, newlines
    return rates(LINES, total, elapsed)


class Reader(threading.Thread):
    """Counts what one reader gets; `done` is when its stream ended."""

    def __init__(self, target: Any) -> None:
        super().__init__(daemon=True)
        self._target = target
        self.bytes = 0
        self.lines = 0
        self.done = 0.0
        self.note = ""

    def run(self) -> None:
        self._target(self)
        self.done = time.perf_counter()


def follow_with_klee(daemon: Daemon, cid: str) -> Reader:
    def read(reader: Reader) -> None:
        proc = subprocess.Popen([*KLEE, "--host", daemon.host, "logs", "-f", cid], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env_without_klee())
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            reader.bytes += len(chunk)
            reader.lines += chunk.count(b"\n")
        reader.note = f"klee exit {proc.wait()}"

    return Reader(read)


def attach_client(ws: Any) -> Reader:
    def read(reader: Reader) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                frame = ws.recv()
                if isinstance(frame, bytes):
                    reader.bytes += len(frame) - 1
                    reader.lines += frame.count(b"\n")
        except ConnectionClosed:
            reader.note = json.loads(ws.close_reason)["message"] if ws.close_reason else ""

    return Reader(read)


def wait_die(daemon: Daemon, cid: str) -> Reader:
    def read(reader: Reader) -> None:
        with connect(daemon, "/events") as ws:
            ws.send(json.dumps({"filters": {"object": [cid], "event": ["die"]}}))
            ws.recv()
            reader.note = json.loads(ws.recv())["attributes"]["exit_code"]

    return Reader(read)


def daemon_run(daemon: Daemon, api: Any, image: str, *, readers: bool) -> dict[str, Any]:
    cid = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sh", "-c", f"read go; {WRITER}"],
                                               "network_driver": "host"}).json()["id"]
    eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    assert exec_stream(daemon, eid, attach=False).close_code == 1001
    pid = daemon.proc.pid if daemon.proc else 0
    with connect(daemon, f"/containers/{cid}/attach") as ws:
        ws.send(json.dumps({"multiplex": True}))
        ws.recv()
        die = wait_die(daemon, cid)
        die.start()
        time.sleep(0.3)  # the events subscription is in place
        extra = [follow_with_klee(daemon, cid), attach_client(ws)] if readers else []
        for reader in extra:
            reader.start()
        time.sleep(0.3 if readers else 0)  # klee has started and connected
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        ws.send(b"go\n" if readers else b"go\n\x10\x11")  # without readers: start it and detach at once
        die.join()
        for reader in extra:
            reader.join()
        t1, cpu1 = time.perf_counter(), cpu_seconds(pid)
    nbytes = LINES * (len(LINE) + 1)
    result: dict[str, Any] = {"container": rates(LINES, nbytes, die.done - t0),
                              "daemon_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
                              "daemon_cpu_seconds_per_million_lines": round((cpu1 - cpu0) * 1e6 / LINES, 2)}
    if readers:
        follower, attached = extra
        assert follower.lines == LINES, (follower.lines, follower.note)
        result["klee_logs_follow"] = rates(follower.lines, follower.bytes, follower.done - t0)
        result["attach"] = {**rates(attached.lines, attached.bytes, attached.done - t0), "end": attached.note}
    api.delete(f"/containers/{cid}")
    return result


def writer_alone(threaded: bool, chunks: int = 2000) -> dict[str, Any]:
    """The log writer in-process: 64 KiB chunks of lines, batches written in a thread or inline."""
    import trio

    from kleened.core.fanout import Stream
    from kleened.core.logs import Logs

    chunk = (LINE.encode() + b"\n") * (65536 // (len(LINE) + 1))
    with tempfile.TemporaryDirectory(prefix="kleened-bench-log-") as tmp:
        log = Logs(Path(tmp), max_size=64 * 2**20, max_files=2, threaded=threaded).open("c")

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(log.write_until_closed)
                for _ in range(chunks):
                    await log.wait_writable()
                    log.record(Stream.STDOUT, chunk)
                    await trio.lowlevel.checkpoint()
                log.close()

        cpu0, t0 = time.process_time(), time.perf_counter()
        trio.run(main)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lines = chunks * chunk.count(b"\n")
    return {**rates(lines, chunks * len(chunk), elapsed), "cpu_cores": round(cpu / elapsed, 2)}


@contextlib.contextmanager
def quiet_daemon(**config: Any) -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="kleened-bench-") as tmp, \
            running_daemon(Path(tmp), extra={"log_level": "info", **config}) as daemon:
        yield daemon


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"lines": LINES, "line_bytes": len(LINE) + 1}
    results["log_writer_threaded"] = writer_alone(threaded=True)
    results["log_writer_inline"] = writer_alone(threaded=False)
    with quiet_daemon(log_max_files=RETAINED_FILES) as daemon, daemon.client() as api:
        image = create_image(daemon, tag="benchstreams")
        raw = RawRunc(daemon.workdir)
        try:
            results["floor_raw_pipe"] = floor(raw)
        finally:
            raw.close()
        results["capture_only"] = daemon_run(daemon, api, image, readers=False)
        results["follow_and_attach"] = daemon_run(daemon, api, image, readers=True)
    # An attached client slower than the writer is dropped once attach_buffer (4 MiB) behind; with
    # room for the whole output it stays, and its rate is measured to the end.
    with quiet_daemon(log_max_files=RETAINED_FILES, attach_buffer=64 * 2**20) as daemon, daemon.client() as api:
        image = create_image(daemon, tag="benchstreams")
        results["follow_and_attach_64MiB_attach_buffer"] = daemon_run(daemon, api, image, readers=True)
    floor_rate = results["floor_raw_pipe"]["lines_per_s"]
    for key in ("capture_only", "follow_and_attach", "follow_and_attach_64MiB_attach_buffer"):
        results[key]["container_vs_floor"] = round(results[key]["container"]["lines_per_s"] / floor_rate, 3)
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
