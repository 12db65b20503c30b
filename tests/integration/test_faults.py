"""Fault matrix: kleened killed with SIGKILL at each named step of create, start, stop, exit, rm,
commit, build, image creation (file and http), network connect/disconnect and volume rm.

The daemon is armed with `KLEENED_FAULT_POINT=<point>` (see `kleened.faults`: inert unless set),
the operation is sent, the daemon dies there; it is started again unarmed, and then:
- it serves, and the host matches the API (`tests.invariants`: no leak, orphan, ghost, zombie);
- no volume data is lost, and the work directory (downloads, uploads) is empty;
- the interrupted operation, tried again, works.
One state root serves the whole matrix, so each restart also reconciles what earlier ones left.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.httpserve import serve_directory
from tests.invariants import assert_clean
from tests.rootfs import session_tarball
from tests.wsapi import connect, create_image, exec_stream, run_stream

SENTINEL = "precious data\n"


@pytest.fixture(scope="module")
def faulty() -> Iterator[Daemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-fault-") as tmp, running_daemon(Path(tmp)) as d:
        with d.client() as api:
            create_image(d, tag="fb")
            keeper = _create(api, ["/bin/sh", "-c", f"printf '{SENTINEL}' > /data/sentinel"],
                             mounts=[{"type": "volume", "source": "data", "destination": "/data"}])
            assert _run(d, api, keeper).close_code == 1000
            r = api.post("/networks/create", json={"name": "fnet", "type": "bridge", "subnet": "10.79.0.0/24"})
            assert r.status_code == 201, r.text
        yield d


def _create(api: httpx.Client, cmd: list[str], **config: object) -> str:
    r = api.post("/containers/create", json={"image": "fb", "cmd": cmd, "network_driver": "host", **config})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run(daemon: Daemon, api: httpx.Client, cid: str, *, attach: bool = True):
    r = api.post("/exec/create", json={"container_id": cid})
    assert r.status_code == 201, r.text
    return exec_stream(daemon, r.json()["id"], attach=attach)


@pytest.fixture(scope="module")
def http_tarball(faulty: Daemon) -> Iterator[str]:
    """The busybox tarball over plain http on 127.0.0.1."""
    tarball = session_tarball(faulty.workdir)
    with serve_directory(tarball.parent) as url:
        yield f"{url}/{tarball.name}"


def _crash_at(daemon: Daemon, point: str, operation: Callable[[httpx.Client], object]) -> None:
    """Restart armed, send the operation (it dies with the daemon), restart unarmed."""
    daemon.stop()
    daemon.env["KLEENED_FAULT_POINT"] = point
    daemon.start()
    # The operation dies with the daemon: whatever error it ends with is expected.
    with daemon.client() as api, contextlib.suppress(httpx.TransportError, ConnectionClosed, OSError,
                                                       AssertionError, json.JSONDecodeError):
        operation(api)
    daemon.wait_dead()
    assert f"point={point}" in daemon.log(), f"fault point {point} was not reached:\n{daemon.log()[-3000:]}"
    del daemon.env["KLEENED_FAULT_POINT"]
    daemon.start()


def _healthy(daemon: Daemon) -> None:
    assert_clean(daemon)
    with daemon.client() as api:
        mountpoint = Path(api.get("/volumes/data/inspect").json()["volume"]["mountpoint"])
    assert (mountpoint / "sentinel").read_text() == SENTINEL, "volume data lost"
    tmp = daemon.state_root / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == [], "the work directory was not emptied"


def _start_detached(daemon: Daemon, api: httpx.Client, cid: str) -> None:
    _run(daemon, api, cid, attach=False)


# name -> (what to prepare while unarmed, the operation that dies, what must work afterwards)
def _container_ops(point: str) -> tuple[Callable, Callable, Callable]:
    mounts = [{"type": "volume", "source": "data", "destination": "/data"}]

    def prepare(daemon: Daemon, api: httpx.Client) -> dict[str, str]:
        victim = _create(api, ["/bin/cat", "/data/sentinel"], mounts=mounts, network_driver="ipnet")
        assert api.post("/networks/connect", json={"container": victim, "network": "fnet"}).status_code == 204
        sleeper = _create(api, ["/bin/sleep", "300"])
        return {"victim": victim, "sleeper": sleeper}

    def operation(daemon: Daemon, api: httpx.Client, objs: dict[str, str]) -> None:
        if point.startswith("container.create"):
            _create(api, ["/bin/true"], mounts=mounts)
        elif point.startswith("container.start") or point == "container.exit.locked":
            _run(daemon, api, objs["victim"])
        elif point == "container.stop.signalled":
            _start_detached(daemon, api, objs["sleeper"])
            api.post(f"/containers/{objs['sleeper']}/stop")
        elif point == "container.remove.forgotten":
            api.delete(f"/containers/{objs['victim']}")

    def after(daemon: Daemon, api: httpx.Client, objs: dict[str, str]) -> None:
        if point == "container.remove.forgotten":
            assert api.get(f"/containers/{objs['victim']}/inspect").status_code == 404
        else:
            stream = _run(daemon, api, objs["victim"])
            assert stream.text == SENTINEL and stream.close_reason["message"].endswith("exit-code 0"), stream
        for cid in objs.values():
            if api.get(f"/containers/{cid}/inspect").status_code == 200:
                api.post(f"/containers/{cid}/stop")
                assert api.delete(f"/containers/{cid}").status_code == 200

    return prepare, operation, after


CONTAINER_POINTS = ["container.create.fs", "container.create.mounts", "container.start.begin",
                    "container.start.mounted", "container.start.network", "container.start.created",
                    "container.exit.locked",
                    "container.stop.signalled", "container.remove.forgotten"]


@pytest.mark.parametrize("point", CONTAINER_POINTS)
def test_container_operation_killed(faulty, point):
    prepare, operation, after = _container_ops(point)
    with faulty.client() as api:
        objs = prepare(faulty, api)
    _crash_at(faulty, point, lambda api: operation(faulty, api, objs))
    _healthy(faulty)
    with faulty.client() as api:
        after(faulty, api, objs)
    assert_clean(faulty)


def test_image_creation_from_a_file_killed(faulty):
    url = f"file://{session_tarball(faulty.workdir)}"
    _crash_at(faulty, "image.create.filled", lambda api: run_stream(
        faulty, "/images/create", {"method": "fetch", "url": url, "tag": "half:1"}, timeout=30))
    _healthy(faulty)
    with faulty.client() as api:
        assert api.get("/images/half:1/inspect").status_code == 404
    assert create_image(faulty, tag="half:1")


def test_image_download_killed(faulty, http_tarball):
    _crash_at(faulty, "image.fetch.downloading", lambda api: run_stream(
        faulty, "/images/create", {"method": "fetch", "url": http_tarball, "tag": "dl:1"}, timeout=30))
    _healthy(faulty)
    stream = run_stream(faulty, "/images/create", {"method": "fetch", "url": http_tarball, "tag": "dl:1"})
    assert stream.close_code == 1000, stream


def test_build_killed_after_a_step(faulty, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    # Two stages: the kill comes while an earlier stage's container (`builder_<id>_stage0`) exists too.
    (context / "Dockerfile").write_text("FROM fb AS first\nRUN echo one > /one\n"
                                        "FROM fb\nCOPY --from=first /one /one\nRUN echo two > /two\n")
    config = {"context": str(context), "dockerfile": "Dockerfile", "tag": "built:1",
              "container_config": {"network_driver": "host"}}

    def build(api: httpx.Client) -> None:
        with connect(faulty, "/images/build") as ws:
            ws.send(json.dumps(config))
            while True:
                ws.recv(timeout=60)

    _crash_at(faulty, "build.step.committed", build)
    _healthy(faulty)
    with faulty.client() as api:
        names = [c["name"] for c in api.get("/containers/list?all=true").json()]
        assert not any(n and n.startswith("builder_") for n in names), names
    stream = run_stream(faulty, "/images/build", config)
    assert stream.close_code == 1000, stream


@pytest.mark.parametrize("point", ["container.commit.named", "storage.commit.moved", "container.commit.moved"])
def test_commit_killed(faulty, point):
    """Killed before, between and after the storage's moves of the writable layer: the
    container's files survive (on its stack or still in its writable layer), and it commits again."""
    marker = "[ -f /made ] && cat /made || { echo kept > /made; echo fresh; }"
    with faulty.client() as api:
        cid = _create(api, ["/bin/sh", "-c", marker])
        assert _run(faulty, api, cid).text == "fresh\n"
    _crash_at(faulty, point, lambda api: api.post(f"/containers/{cid}/commit", json={"tag": "killed:1"}))
    _healthy(faulty)
    with faulty.client() as api:
        stream = _run(faulty, api, cid)
        assert stream.text == "kept\n", f"the container's files were lost: {stream}"
        r = api.post(f"/containers/{cid}/commit", json={"tag": "killed:1"})
        assert r.status_code == 201, r.text
        assert api.delete(f"/containers/{cid}").status_code == 200
        assert api.delete("/images/killed:1").status_code == 200
    assert_clean(faulty)


def test_network_connect_and_disconnect_killed(faulty):
    with faulty.client() as api:
        cid = _create(api, ["/bin/true"], network_driver="ipnet")
    _crash_at(faulty, "network.connect.stored", lambda api: api.post(
        "/networks/connect", json={"container": cid, "network": "fnet"}))
    _healthy(faulty)
    _crash_at(faulty, "network.disconnect.unplugged", lambda api: api.post(f"/networks/fnet/disconnect/{cid}"))
    _healthy(faulty)
    with faulty.client() as api:
        # Killed before the endpoint was forgotten: still connected, and a disconnect now completes.
        assert [e["network_id"] for e in api.get(f"/containers/{cid}/inspect").json()["container_endpoints"]] \
            == [api.get("/networks/fnet/inspect").json()["network"]["id"]]
        assert api.post(f"/networks/fnet/disconnect/{cid}").status_code == 204
        assert api.post("/networks/connect", json={"container": cid, "network": "fnet"}).status_code == 204
        stream = _run(faulty, api, cid)
        assert stream.close_reason["message"].endswith("exit-code 0"), stream
        assert api.delete(f"/containers/{cid}").status_code == 200


def test_volume_removal_killed(faulty):
    name = f"gone{secrets.token_hex(3)}"
    with faulty.client() as api:
        assert api.post("/volumes/create", json={"name": name}).status_code == 201
    _crash_at(faulty, "volume.remove.forgotten", lambda api: api.delete(f"/volumes/{name}"))
    _healthy(faulty)
    with faulty.client() as api:
        assert api.get(f"/volumes/{name}/inspect").status_code == 404
        assert api.post("/volumes/create", json={"name": name}).status_code == 201
        assert api.delete(f"/volumes/{name}").status_code == 200


def test_start_up_cleans_or_skips_what_it_does_not_recognise(faulty):
    """Issue reproduction: a `.trash-*` directory with an overlay still mounted in it made the next
    start exit (`invalid container id '.trash-...'`). Start-up now cleans what is ours and skips,
    with a warning, what it does not recognise; it always comes up."""
    faulty.stop()
    root = faulty.state_root
    trash = root / "containers" / ".trash-0123456789ab-cafe" / "rootfs"
    trash.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(trash)], check=True)
    orphan = root / "containers" / "0123456789ab"
    (orphan / "upper").mkdir(parents=True)
    strange = root / "containers" / "not a container"
    strange.mkdir()
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "download-0123").write_bytes(b"x" * 4096)
    (root / "layers" / ".tmp-0123456789ab").mkdir()
    (root / "bundles" / "0123456789ab").mkdir(parents=True, exist_ok=True)
    try:
        faulty.start()
        assert not trash.parent.exists() and not orphan.exists()
        assert not (root / "layers" / ".tmp-0123456789ab").exists()
        assert not (root / "bundles" / "0123456789ab").exists()
        assert strange.is_dir() and "not a container directory" in faulty.log()
    finally:
        strange.rmdir()
    _healthy(faulty)
