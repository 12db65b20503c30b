"""Live restore: containers outlive kleened (kill -9 or SIGTERM) and the next one adopts them.

Each test has a daemon of its own with `live_restore: true`. The containers run through the
gap under their monitors (conmon); the checks are on the host (runc, the published port, the
log file growing) while no daemon runs, then through the API and our klee once it is back.
Invariants (tests/invariants.py) are checked right after the restart, when the adopted
containers' mounts, namespaces, plugs and port rules must all be accounted for.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli import run_klee
from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.integration.test_containers import create, exec_create, start_detached
from tests.integration.test_networks import connect, create_net, server_cmd, subnets
from tests.integration.test_races import ROUNDS, SEED, at_once, no_server_error
from tests.invariants import assert_clean
from tests.leaks import runc_containers
from tests.wsapi import create_image, exec_stream, run_stream

WRITER = ["/bin/sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.02; done"]
# Ends with 7 once the test creates /tmp/go in it: an exit that happens while no daemon runs.
WAITER = ["/bin/sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.02; done; exit 7"]


@pytest.fixture
def live() -> Iterator[Daemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-live-") as tmp, \
            running_daemon(Path(tmp), extra={"live_restore": True}) as d:
        yield d


def wait_for(what: str, check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    return value


def inspect(api, cid: str) -> dict:
    return api.get(f"/containers/{cid}/inspect").json()["container"]


def fetch(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return r.read()


def log_file(d: Daemon, cid: str) -> Path:
    return d.state_root / "logs" / cid / "live.log"


def lines_of(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("line ")]


def start_tty(api, d: Daemon, cid: str) -> None:
    stream = exec_stream(d, exec_create(api, cid, tty=True), attach=False, start_container="true")
    assert stream.close_code == 1001, stream


@pytest.mark.parametrize("stop", ["kill", "term"])
def test_containers_outlive_the_daemon_and_are_adopted(live, stop):
    d = live
    image = create_image(d)
    port = 20000 + int(d.prefix[-3:], 16) % 20000
    with d.client() as api:
        net = create_net(api, [], type="bridge", subnet=subnets(d)[0], gateway="<auto>")
        host = create(api, image, ["/bin/sleep", "1000"])
        web = create(api, image, server_cmd("live"), network_driver="vnet",
                     public_ports=[{"interfaces": [], "host_port": str(port), "container_port": "8000",
                                    "protocol": "tcp"}])
        assert connect(api, net["name"], web).status_code == 204
        tty = create(api, image, ["/bin/sh"])
        writer = create(api, image, WRITER)
        waiter = create(api, image, WAITER)
        for cid in (host, web, writer, waiter):
            start_detached(api, d, cid)
        start_tty(api, d, tty)
        wait_for("the web container serves", lambda: _serves(port))
        wait_for("the writer writes", lambda: log_file(d, writer).exists() and log_file(d, writer).stat().st_size)
    running = {host, web, tty, writer, waiter}

    if stop == "kill":
        d.kill()
    else:
        assert d.stop() == 0
    # No daemon: everything runs on, the port answers, the log grows.
    assert set(runc_containers(d.state_root)) == running
    assert fetch(port) == b"live\n"
    size = log_file(d, writer).stat().st_size
    wait_for("the writer's log grows without a daemon", lambda: log_file(d, writer).stat().st_size > size + 200)
    (d.state_root / "containers" / waiter / "rootfs" / "tmp" / "go").touch()
    wait_for("the waiter ends", lambda: (d.state_root / "bundles" / waiter / "exit").exists())

    d.start()
    with d.client() as api:
        for cid in running - {waiter}:
            assert inspect(api, cid)["running"], cid
        ended = inspect(api, waiter)
        assert (ended["running"], ended["exit_code"]) == (False, 7)
        assert ended["finished_at"] is not None
        assert_clean(d)
        assert fetch(port) == b"live\n"
        assert inspect(api, web)["public_ports"][0]["ip_address"]

        # The log holds every line, across the gap, and a follower sees new ones.
        logged = lines_of(run_klee(d.host, "logs", writer).stdout)
        assert logged == list(range(len(logged))) and len(logged) > 10
        follower = subprocess.Popen([sys.executable, "-m", "klee", "--host", d.host, "logs", "-f", writer],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "HOME": "/nonexistent"})
        try:
            assert _follow_until(follower, logged[-1] + 1, timeout=30)
        finally:
            follower.kill()
            follower.wait()

        # Attach to the adopted TTY container, exec in the adopted host one.
        attached = run_klee(d.host, "attach", tty, input="echo hi-$((6*7)); exit 3\n")
        assert "hi-42" in attached.stdout, attached
        assert wait_for("the tty container ends", lambda: _stopped(api, tty))["exit_code"] == 3
        executed = run_klee(d.host, "exec", host, "/bin/echo", "in-host")
        assert executed.returncode == 0 and "in-host" in executed.lines, executed

        for cid in (host, web, writer):
            r = run_klee(d.host, "stop", cid)
            assert r.returncode == 0, r
            assert not inspect(api, cid)["running"]
        for cid in running:
            assert run_klee(d.host, "rmc", cid).returncode == 0
        assert_clean(d)
        api.delete(f"/networks/{net['name']}")


def test_a_container_whose_monitor_died_is_stopped_and_reported(live):
    d = live
    image = create_image(d)
    with d.client() as api:
        orphan = create(api, image, ["/bin/sleep", "1000"])
        kept = create(api, image, ["/bin/sleep", "1000"])
        start_detached(api, d, orphan)
        start_detached(api, d, kept)
    d.kill()
    monitor = int((d.state_root / "bundles" / orphan / "conmon.pid").read_text())
    os.kill(monitor, signal.SIGKILL)
    wait_for("the monitor is gone", lambda: not Path(f"/proc/{monitor}/cmdline").exists()
             or not Path(f"/proc/{monitor}/cmdline").read_bytes())
    d.start()
    with d.client() as api:
        c = inspect(api, orphan)
        assert (c["running"], c["exit_code"]) == (False, -1) and c["finished_at"]
        assert inspect(api, kept)["running"]
        assert_clean(d)
        assert runc_containers(d.state_root) == [kept]
        warnings = [line for line in d.log().splitlines() if "monitor of container" in line and orphan in line]
        assert len(warnings) == 1, d.log()[-3000:]
        api.post(f"/containers/{kept}/stop")
        for cid in (orphan, kept):
            assert api.delete(f"/containers/{cid}").status_code == 200


@pytest.mark.parametrize("point", ["container.start.created", "container.exit.locked"])
def test_a_crash_mid_start_or_mid_exit_leaves_nothing_half_managed(live, point):
    """kill -9 between the runtime's create and start (a monitor exists, the container never
    ran), or while the exit is torn down (the monitor wrote the exit status): the next daemon
    adopts neither, cleans both up, and the container starts again."""
    d = live
    image = create_image(d)
    with d.client() as api:
        cid = create(api, image, ["/bin/sh", "-c", "echo ran; exit 5"])
        if point == "container.start.created":
            kept = create(api, image, ["/bin/sleep", "1000"])
            start_detached(api, d, kept)
    d.stop()
    d.env["KLEENED_FAULT_POINT"] = point
    d.start()
    with d.client() as api, contextlib.suppress(Exception):
        exec_stream(d, exec_create(api, cid), timeout=30)
    d.wait_dead()
    del d.env["KLEENED_FAULT_POINT"]
    assert f"point={point}" in d.log()
    d.start()
    with d.client() as api:
        c = inspect(api, cid)
        assert not c["running"]
        if point == "container.exit.locked":
            assert (c["exit_code"], bool(c["finished_at"])) == (5, True)
        assert_clean(d)
        assert exec_stream(d, exec_create(api, cid)).text == "ran\n"
        for other in [c["id"] for c in api.get("/containers/list").json()]:
            assert inspect(api, other)["running"]  # the one started before the crash was adopted
            api.post(f"/containers/{other}/stop")
        for c in api.get("/containers/list?all=true").json():
            assert api.delete(f"/containers/{c['id']}").status_code == 200


def test_adopted_containers_racing_stop_exec_attach_and_rm(live):
    """After adoption, the same races as for started containers (tests/integration/test_races.py):
    stop x exec x attach, then rm x start, each pair at once with random jitter; no 5xx, the
    pair's rule holds, and the invariants after."""
    d = live
    rng = random.Random(f"{SEED}:adopted")
    image = create_image(d)
    rounds = max(2, min(ROUNDS, 6))
    with d.client() as api:
        cids = [create(api, image, ["/bin/sleep", "300"]) for _ in range(rounds)]
        for cid in cids:
            start_detached(api, d, cid)
    d.kill()
    d.start()
    with d.client() as api:
        for cid in cids:
            assert inspect(api, cid)["running"], f"seed {SEED}: {cid} was not adopted"

            def attach(cid: str = cid) -> dict:
                s = run_stream(d, f"/containers/{cid}/attach", {"stdin": False})
                return {"close_code": s.close_code, "close_reason": s.close_reason}

            def exec_in(cid: str = cid) -> dict:
                r = api.post("/exec/create", json={"container_id": cid, "cmd": ["/bin/echo", "hi"]})
                s = exec_stream(d, r.json()["id"], start_container=False)
                return {"close_code": s.close_code, "close_reason": s.close_reason}

            stopped, attached, executed = at_once(rng, lambda cid=cid: api.post(f"/containers/{cid}/stop"),
                                                  attach, exec_in)
            no_server_error(stopped, attached, executed)
            assert stopped.status_code == 200 and not inspect(api, cid)["running"]
            def start_again(cid: str = cid) -> dict | httpx.Response:
                r = api.post("/exec/create", json={"container_id": cid})
                if r.status_code != 201:
                    return r  # removed first
                s = exec_stream(d, r.json()["id"], attach=False)
                return {"close_code": s.close_code, "close_reason": s.close_reason}

            removed, started = at_once(rng, lambda cid=cid: api.delete(f"/containers/{cid}"), start_again)
            no_server_error(removed, started)
            if removed.status_code == 200:
                assert api.get(f"/containers/{cid}/inspect").status_code == 404
            else:
                assert removed.status_code == 409, f"seed {SEED}: {removed.text}"
                api.post(f"/containers/{cid}/stop")
                assert api.delete(f"/containers/{cid}").status_code == 200
        assert_clean(d)


def test_restart_policies_apply_across_the_gap(live):
    """`on-failure`: a container that failed while no daemon ran is started again at start-up;
    `always`: an adopted container that exits afterwards is restarted by its policy."""
    d = live
    image = create_image(d)
    # Fails once (when /tmp/go appears), then runs on after its restart.
    once = ["/bin/sh", "-c", "[ -e /tmp/done ] && exec sleep 1000; while [ ! -e /tmp/go ]; do sleep 0.02; done; "
                             "touch /tmp/done; exit 7"]
    with d.client() as api:
        failing = create(api, image, once, restart_policy="on-failure")
        adopted = create(api, image, once, restart_policy="always")
        for cid in (failing, adopted):
            start_detached(api, d, cid)
    d.kill()
    (d.state_root / "containers" / failing / "rootfs" / "tmp" / "go").touch()
    wait_for("it fails", lambda: (d.state_root / "bundles" / failing / "exit").exists())
    d.start()
    with d.client() as api:
        wait_for("it is started again", lambda: inspect(api, failing)["running"])
        assert (d.state_root / "containers" / failing / "rootfs" / "tmp" / "done").exists()  # it ran, failed, runs
        assert inspect(api, adopted)["running"]
        (d.state_root / "containers" / adopted / "rootfs" / "tmp" / "go").touch()
        c = wait_for("the adopted one is restarted", lambda: (c := inspect(api, adopted))["restart_count"] == 1
                     and c["running"] and c)
        assert c["exit_code"] == 7
        assert_clean(d)
        for cid in (failing, adopted):
            api.post(f"/containers/{cid}/update", json={"restart_policy": "no"})
            api.post(f"/containers/{cid}/stop")
            assert api.delete(f"/containers/{cid}").status_code == 200


def test_without_live_restore_a_restart_stops_what_ran(tmp_path):
    """The default: SIGTERM stops every container; after kill -9 the next start stops what
    still runs and records it as ended (tests/integration/test_restart.py has the rest)."""
    require_root_runtime()
    with running_daemon(tmp_path) as d:
        image = create_image(d)
        with d.client() as api:
            cid = create(api, image, ["/bin/sleep", "1000"])
            start_detached(api, d, cid)
        d.kill()
        assert runc_containers(d.state_root) == [cid]
        d.start()
        with d.client() as api:
            c = inspect(api, cid)
            assert not c["running"] and c["finished_at"]
            assert runc_containers(d.state_root) == []
            assert_clean(d)
            start_detached(api, d, cid)
        d.stop()
        assert runc_containers(d.state_root) == []
        d.start()


def _serves(port: int) -> bool:
    try:
        return fetch(port) == b"live\n"
    except OSError:
        return False


def _follow_until(follower: subprocess.Popen[bytes], wanted: int, timeout: float) -> bool:
    """Read `klee logs -f` until it printed line `wanted`, consecutive from its first."""
    assert follower.stdout is not None
    fd, buffer, seen = follower.stdout.fileno(), b"", []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if ready and not chunk:
            return False
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        seen += lines_of(b"\n".join(done).decode())
        if seen and seen[-1] >= wanted:
            return seen == list(range(seen[0], seen[-1] + 1))
    return False


def _stopped(api, cid: str) -> dict | None:
    c = inspect(api, cid)
    return None if c["running"] else c

