"""Daemon restarts: on-startup containers, clean shutdown, and recovery after SIGKILL."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_root_runtime
from tests.daemon import running_daemon
from tests.integration.test_containers import create, exec_create, start_detached
from tests.leaks import host_leaks, mounts_under, runc_containers
from tests.wsapi import create_image, exec_stream


@pytest.fixture
def fresh(tmp_path_factory):
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-restart-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


def running(api, cid: str) -> bool:
    return api.get(f"/containers/{cid}/inspect").json()["container"]["running"]


def wait_running(api, cid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not running(api, cid):
        assert time.monotonic() < deadline, f"{cid} did not start"
        time.sleep(0.05)


def test_on_startup_containers_start_with_the_daemon(fresh):
    image = create_image(fresh)
    with fresh.client() as api:
        auto = create(api, image, ["/bin/sleep", "1000"], restart_policy="on-startup")
        manual = create(api, image, ["/bin/sleep", "1000"])
        assert not running(api, auto)
    fresh.stop()
    fresh.start()
    with fresh.client() as api:
        wait_running(api, auto)
        assert not running(api, manual)
    fresh.stop()  # a clean shutdown stops every container and leaves nothing behind
    assert host_leaks(fresh.state_root, fresh.prefix) == []
    fresh.start()
    with fresh.client() as api:
        wait_running(api, auto)
        api.post(f"/containers/{auto}/stop")
        api.post(f"/containers/{auto}/update", json={"restart_policy": "no"})


def test_recovery_after_sigkill(fresh):
    image = create_image(fresh)
    with fresh.client() as api:
        plain = create(api, image, ["/bin/sleep", "1000"])
        auto = create(api, image, ["/bin/sleep", "1000"], restart_policy="on-startup")
        start_detached(api, fresh, plain)
        start_detached(api, fresh, auto)
    fresh.kill()
    # The containers outlive a killed daemon (runc runs them detached) ...
    assert set(runc_containers(fresh.state_root)) == {plain, auto}
    assert mounts_under(fresh.state_root)
    fresh.start()
    # ... and the next daemon cleans them up, then starts what its policy says.
    with fresh.client() as api:
        wait_running(api, auto)
        assert not running(api, plain)
        assert runc_containers(fresh.state_root) == [auto]
        c = api.get(f"/containers/{plain}/inspect").json()["container"]
        assert c["finished_at"] is not None
        stream = exec_stream(fresh, exec_create(api, plain, ["/bin/echo", "again"]))
        assert stream.text == "again\n"
        api.post(f"/containers/{auto}/stop")
        api.post(f"/containers/{auto}/update", json={"restart_policy": "no"})


def test_a_build_cut_short_by_a_crash_leaves_nothing_after_restart(fresh, tmp_path):
    import json as _json
    import threading

    from tests.wsapi import connect

    image = create_image(fresh)
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nRUN echo one > /one\nRUN sleep 1000\n")
    started = threading.Event()

    def build():
        with connect(fresh, "/images/build") as ws:
            ws.send(_json.dumps({"context": str(tmp_path), "container_config": {}, "cleanup": False}))
            try:
                while True:
                    if "Snapshot created" in str(ws.recv(timeout=30)):
                        started.set()
            except Exception:
                started.set()

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    assert started.wait(60)
    fresh.kill()
    thread.join(10)
    layers_dir = fresh.state_root / "layers"
    fresh.start()
    with fresh.client() as api:
        assert not any(c["name"].startswith("builder_") for c in api.get("/containers/list?all=true").json())
        images = api.get("/images/list").json()
        assert [i["id"] for i in images] == [image]
        used = set(api.get(f"/images/{image}/inspect").json()["dataset"].split("/")[-1:])
        left = {p.name for p in layers_dir.iterdir() if not p.name.startswith(".")}
        assert left == used, (left, used)


def test_shutdown_ends_attached_sessions_with_their_exit_code(fresh):
    import json as _json
    import signal

    from tests.wsapi import collect, connect

    image = create_image(fresh)
    with fresh.client() as api:
        cid = create(api, image, ["/bin/sleep", "100"])
        eid = exec_create(api, cid)
    with connect(fresh, "/exec/start") as ws:
        ws.send(_json.dumps({"exec_id": eid, "attach": True, "start_container": True}))
        assert _json.loads(ws.recv(timeout=10))["msg_type"] == "starting"
        fresh.proc.send_signal(signal.SIGTERM)
        stream = collect(ws, timeout=30)
    assert stream.close_code == 1000
    assert stream.close_reason["message"] == f"executable {eid} and its container exited with exit-code 143"
    assert fresh.proc.wait(30) == 0
    assert host_leaks(fresh.state_root, fresh.prefix) == []
    fresh.start()  # the fixture stops it again
