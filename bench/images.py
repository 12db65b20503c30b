"""Image pulls from a local registry (distribution 2.8 on 127.0.0.1, plain HTTP): a 5-layer image
pulled fresh, against its floor `skopeo copy` of the same image to an OCI directory (which only
downloads and verifies, where a pull also unpacks every layer), and a second image that shares
4 of the 5 layers (only the new layer's bytes may move). Target: the fresh pull within 1.3x of
skopeo."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme

from bench.common import summary
from bench.streams import cpu_seconds
from tests.daemon import Daemon, running_daemon
from tests.oci_layouts import Layout, random_file, tar_of_dir, tar_of_entries
from tests.registry import running_registry
from tests.rootfs import session_rootfs
from tests.wsapi import run_stream

MiB = 1024 * 1024
CONCURRENCY = int(os.environ.get("KLEENE_BENCH_CONCURRENCY", "3"))  # the daemon's registry_concurrency
LAYER_BYTES = 16 * MiB  # of random (incompressible) content per data layer


def _layouts(workdir: Path) -> tuple[Path, int, int]:
    """Layouts of two images: A (busybox + 4 data layers) and B (A's first 4 layers + a new one).

    Returns (layout dir, bytes of A's blobs, bytes of B's new layer blob)."""
    layout = Layout(workdir / "layout")
    base = layout.layer(tar_of_dir(session_rootfs(workdir)))
    data = [layout.layer(tar_of_entries([(f"data{i}/", None), (f"data{i}/blob", random_file(LAYER_BYTES, i))]))
            for i in range(5)]
    a = [base, *data[:4]]
    b = [*a[:4], data[4]]
    layout.tag(layout.image(a), "a")
    layout.tag(layout.image(b), "b")
    return layout.dest, sum(desc["size"] for desc, _ in a), data[4][0]["size"]


def _pull(daemon: Daemon, reference: str) -> tuple[str, int]:
    """(image id, layer bytes downloaded)."""
    stream = run_stream(daemon, "/images/pull", {"reference": reference}, timeout=600)
    assert stream.close_code == 1000, stream.close_reason
    moved = sum(json.loads(f)["total"] for f in stream.frames[1:]
                if isinstance(f, str) and '"status":"Pull complete"' in f)
    return stream.close_reason["data"], moved


def _skopeo(registry: str, reference: str, dest: Path, tag: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{registry}/{reference}",
                    f"oci:{dest}:{tag}"], check=True, capture_output=True, timeout=600)


def run(runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kleened-bench-img-") as tmp:
        work = Path(tmp)
        layout, a_bytes, new_bytes = _layouts(work)
        with running_registry(work / "registry", trustme.CA(), "none") as registry, \
                running_daemon(work / "daemon", extra={"log_level": "info", "registry_concurrency": CONCURRENCY,
                                                       "insecure_registries": [registry.host]}) as daemon:
            for tag in ("a", "b"):
                registry.copy_in(layout, f"bench/img:{tag}")
            return _measure(daemon, registry.host, work, runs, a_bytes, new_bytes)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # children that ended: the skopeo runs
    return usage.ru_utime + usage.ru_stime


def _measure(daemon: Daemon, host: str, work: Path, runs: int, a_bytes: int, new_bytes: int) -> dict[str, Any]:
    """Ours and the floor alternate, so that load from elsewhere on the machine hits both alike.
    CPU seconds (kleened's threads, skopeo's process) are reported too: they hardly move with the
    machine's load, where wall times do."""
    ours, floor, shared, shared_floor, moved, cpu, cpu_floor = [], [], [], [], [], [], []
    for run in range(runs + 1):  # the first round warms caches up and is not counted
        pulled: list[tuple[str, int]] = []
        cpu0 = cpu_seconds(daemon.pid)
        fresh = _timed(lambda out=pulled: out.append(_pull(daemon, f"{host}/bench/img:a")))
        cpu1 = cpu_seconds(daemon.pid)
        assert pulled[0][1] == a_bytes, (pulled, a_bytes)
        second = _timed(lambda out=pulled: out.append(_pull(daemon, f"{host}/bench/img:b")))
        with daemon.client() as api:
            for image_id, _ in reversed(pulled):
                assert api.delete(f"/images/{image_id}").status_code == 200
        dest = work / "oci-floor"
        shutil.rmtree(dest, ignore_errors=True)
        children0 = _children_cpu()
        copy = _timed(lambda: _skopeo(host, "bench/img:a", work / "oci-floor", "a"))
        children1 = _children_cpu()
        copy_shared = _timed(lambda: _skopeo(host, "bench/img:b", work / "oci-floor", "b"))  # it skips blobs it has
        if run:
            ours.append(fresh)
            shared.append(second)
            moved.append(pulled[1][1])
            floor.append(copy)
            shared_floor.append(copy_shared)
            cpu.append((cpu1 - cpu0) * 1000)
            cpu_floor.append((children1 - children0) * 1000)
    assert max(moved) == new_bytes, (moved, new_bytes)
    return {"layers": 5, "image_bytes": a_bytes, "fresh_pull": summary(ours), "floor_skopeo_copy": summary(floor),
            "ratio": round(summary(ours)["median_ms"] / summary(floor)["median_ms"], 2),
            "shared_pull": summary(shared), "shared_floor_skopeo": summary(shared_floor),
            "shared_ratio": round(summary(shared)["median_ms"] / summary(shared_floor)["median_ms"], 2),
            "shared_bytes_moved": max(moved), "new_layer_bytes": new_bytes,
            "fresh_pull_cpu_ms": summary(cpu)["median_ms"], "floor_skopeo_cpu_ms": summary(cpu_floor)["median_ms"],
            "cpu_ratio": round(summary(cpu)["median_ms"] / summary(cpu_floor)["median_ms"], 2),
            "load_average": os.getloadavg()}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
