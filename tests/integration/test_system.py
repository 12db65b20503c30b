"""`system info`, `system df` and `system prune` against a real kleened, checked against what the
API lists and what is on disk. Prune runs on a daemon of its own: it removes everything unused,
which on the session daemon would include other tests' objects."""

from __future__ import annotations

import json
import os
import secrets
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import run_klee
from tests.daemon import Daemon, running_daemon
from tests.rootfs import session_tarball
from tests.wsapi import create_image

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"sysbox:{secrets.token_hex(3)}")


def klee_json(daemon: Daemon, *args: str):
    r = run_klee(daemon.host, *args, "--output", "json")
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def cgroup_mode() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2"
    return "hybrid" if Path("/sys/fs/cgroup/unified/cgroup.controllers").exists() else "v1"


def test_info_matches_the_api_and_the_host(api, daemon, image):
    name = f"si{secrets.token_hex(4)}"
    assert run_klee(daemon.host, "run", "-d", "--name", name, image, "/bin/sleep", "300").returncode == 0
    try:
        info = klee_json(daemon, "system", "info")
        containers = api.get("/containers/list", params={"all": "true"}).json()
        assert info["containers"] == len(containers)
        assert info["containers_running"] == sum(1 for c in containers if c["running"]) >= 1
        assert info["containers_stopped"] == info["containers"] - info["containers_running"]
        assert info["images"] == len(api.get("/images/list").json())
        assert info["volumes"] == len(api.get("/volumes/list").json())
        assert info["networks"] == len(api.get("/networks/list").json())
        version = api.get("/version").json()
        assert info["version"] == version["version"] and info["api_version"] == version["api_version"]
        assert (info["backend"], info["runtime_version"]) == (version["runtimes"][0]["name"],
                                                              version["runtimes"][0]["version"])
        assert info["kernel"] == os.uname().release and info["os"] == "Linux"
        assert info["cgroup_mode"] == cgroup_mode() and info["storage_driver"] == "overlay"
        assert info["state_root"] == str(daemon.state_root)
        assert {"kind": "unix", "address": str(daemon.socket), "tls": False} in info["listeners"]
        text = run_klee(daemon.host, "system", "info")
        assert "Storage Driver: overlay" in text.lines and f"State Root: {daemon.state_root}" in text.lines
    finally:
        run_klee(daemon.host, "rmc", "-f", name)


def _file_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _regular_bytes(tarball: Path) -> int:
    with tarfile.open(tarball) as tar:
        return sum(m.size for m in tar.getmembers() if m.isreg())


def test_df_sizes_match_the_disk(api, daemon, image, tmp_path):
    name, volume = f"sd{secrets.token_hex(4)}", f"sdv{secrets.token_hex(4)}"
    r = run_klee(daemon.host, "run", "--name", name, "-m", f"{volume}:/vol", image, "/bin/sh", "-c",
                 f"head -c {MIB} /dev/zero > /vol/f")
    assert r.returncode == 0, r
    try:
        payload = tmp_path / "two"
        payload.write_bytes(b"k" * (2 * MIB))
        assert run_klee(daemon.host, "cp", str(payload), f"{name}:/two").returncode == 0
        df = klee_json(daemon, "system", "df")
        cid = api.get(f"/containers/{name}/inspect").json()["container"]["id"]
        row = next(c for c in df["containers"] if c["id"] == cid)
        upper = daemon.state_root / "containers" / cid / "upper"
        assert row["size"] == _file_bytes(upper) and row["size"] >= 2 * MIB and row["running"] is False
        vol = next(v for v in df["volumes"] if v["name"] == volume)
        assert vol == {"name": volume, "size": MIB, "containers": 1}
        base = next(i for i in df["images"] if i["id"] == image)
        layer = Path(api.get(f"/images/{image}/inspect").json()["dataset"])  # a fetched image: one layer
        assert layer.parent == daemon.state_root / "layers"
        assert base["size"] == base["unique_size"] == _file_bytes(layer) >= _regular_bytes(
            session_tarball(daemon.workdir))
        assert base["containers"] >= 1
        caches = daemon.state_root / "buildcache"
        assert df["build_cache_size"] == _file_bytes(caches)
        table = run_klee(daemon.host, "system", "df", "-v")
        assert table.returncode == 0 and "Local Volumes" in table.stdout and volume in table.stdout, table
    finally:
        run_klee(daemon.host, "rmc", name)
        run_klee(daemon.host, "rmv", volume)


@pytest.fixture(scope="module")
def own_daemon() -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="kleened-prune-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


def test_prune_removes_what_is_unused_and_says_how_much(own_daemon, tmp_path):
    d = own_daemon
    image = create_image(d, tag="prunebox:1")
    klee = lambda *args: run_klee(d.host, *args)  # noqa: E731
    keep = klee("run", "-d", "--name", "keeper", image, "/bin/sleep", "300")
    assert keep.returncode == 0, keep
    stopped = klee("run", "--name", "stopped", image, "/bin/sh", "-c", f"head -c {3 * MIB} /dev/zero > /three")
    assert stopped.returncode == 0, stopped
    dangling = klee("commit", "stopped").lines[-1]  # untagged, its layer holds the 3 MiB
    assert klee("network", "create", "--subnet", "10.231.7.0/24", "idle").returncode == 0
    assert klee("volume", "create", "unused").returncode == 0
    refused = klee("system", "prune")  # no terminal to ask: refused without -f
    assert refused.returncode != 0 and "--force" in refused.stderr and refused.stderr.count("\n") == 1, refused
    r = klee("system", "prune", "-f")
    assert r.returncode == 0, r
    out = r.lines
    assert out[out.index("Deleted Containers:") + 1].startswith(stopped.err_lines[0][:12])  # the id: a status line
    assert dangling in out[out.index("Deleted Images:"):] and "Deleted Volumes:" not in out
    assert "idle" not in klee("network", "ls").stdout
    reclaimed = out[-1]
    assert reclaimed.startswith("Total reclaimed space: ") and reclaimed.endswith("MB"), reclaimed
    assert float(reclaimed.split()[-1][:-2]) >= 3 * MIB / 1e6
    assert "keeper" in klee("lsc", "-a").stdout and "unused" in klee("lsv").stdout
    assert image in klee("lsi", "-q").stdout or "prunebox" in klee("lsi").stdout
    r = klee("system", "prune", "-f", "--volumes")
    assert r.returncode == 0 and "unused" in r.lines[r.lines.index("Deleted Volumes:"):], r
    assert "unused" not in klee("lsv").stdout
    klee("rmc", "-f", "keeper")
