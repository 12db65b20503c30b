"""Image builds: a 10-step Dockerfile built cold and rebuilt unchanged with the cache (target: the rebuild is at
least 10x faster), and the cost of one RUN step against its floor, a raw `runc run` of the same command on the same
rootfs, in one run on one machine."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RawRunc, bench_daemon, measure, summary
from tests.daemon import Daemon
from tests.wsapi import collect, connect, create_image

TEN_STEPS = """\
FROM benchbase
RUN echo {token} > /token
RUN echo 1 > /one
COPY a.txt /
RUN echo 3 > /three
WORKDIR /app
RUN echo 4 > four
ENV A=1
RUN echo 5 > /five
COPY b.txt /app/
"""


def _build(daemon: Daemon, ctx: Path, dockerfile: str, *, cache: bool) -> list[str]:
    (ctx / "Dockerfile").write_text(dockerfile)
    config = {"context": str(ctx), "container_config": {"network_driver": "host"}, "quiet": True,
              "cleanup": True, "cache": cache}
    with connect(daemon, "/images/build") as ws:
        ws.send(json.dumps(config))
        stream = collect(ws)
    assert stream.close_code == 1000, stream
    return [f for f in stream.frames if isinstance(f, str)]


def _cold_and_warm(daemon: Daemon, ctx: Path, runs: int) -> dict[str, Any]:
    cold, warm = [], []
    for _ in range(runs):
        dockerfile = TEN_STEPS.format(token=secrets.token_hex(6))  # a new first step: nothing cached below it
        t0 = time.perf_counter()
        _build(daemon, ctx, dockerfile, cache=True)
        cold.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        frames = _build(daemon, ctx, dockerfile, cache=True)
        warm.append((time.perf_counter() - t0) * 1000)
        assert sum("Snapshot created" in f for f in frames) == 7
    result = {"cold": summary(cold), "cached_rebuild": summary(warm)}
    result["speedup"] = round(result["cold"]["median_ms"] / result["cached_rebuild"]["median_ms"], 1)
    return result


def _run_step(daemon: Daemon, ctx: Path, runs: int) -> dict[str, Any]:
    """A build with one RUN minus a build with none: what a RUN step costs, against `runc run`."""
    with_run = measure(lambda: _build(daemon, ctx, "FROM benchbase\nRUN /bin/echo hi\n", cache=False), runs)
    without = measure(lambda: _build(daemon, ctx, "FROM benchbase\nENV A=1\n", cache=False), runs)
    raw = RawRunc(daemon.workdir)
    try:
        raw.write(["/bin/echo", "hi"])
        floor = measure(lambda: raw.runc("run", "-b", str(raw.bundle), raw.name, stdin=subprocess.DEVNULL), runs)
    finally:
        raw.close()
    step = summary(with_run)["median_ms"] - summary(without)["median_ms"]
    return {"build_with_one_run": summary(with_run), "build_without_run": summary(without),
            "run_step_median_ms": round(step, 2), "floor_runc_run": summary(floor),
            "ratio": round(step / summary(floor)["median_ms"], 2)}


def run(runs: int = 10) -> dict[str, object]:
    with bench_daemon() as daemon, tempfile.TemporaryDirectory(prefix="kleened-bench-ctx-") as tmp:
        create_image(daemon, tag="benchbase")
        ctx = Path(tmp)
        (ctx / "a.txt").write_text("a\n" * 1000)
        (ctx / "b.txt").write_text("b\n" * 1000)
        return {"ten_steps": _cold_and_warm(daemon, ctx, runs), "run_step": _run_step(daemon, ctx, runs * 2)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
