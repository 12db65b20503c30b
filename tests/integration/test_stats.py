"""stats (WebSocket) and top (REST) of running containers, and `klee stats`/`klee top`, against a
real kleened and real cgroups."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from tests.integration.test_containers import create, start_detached
from tests.integration.test_klee import run_klee
from tests.wsapi import collect, connect, create_image, run_stream

MIB = 1 << 20


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"statbox:{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def pair(daemon, image):
    """A busy container held to half a CPU (host network) and an idle one with its own stack."""
    with daemon.client() as api:
        busy = create(api, image, ["/bin/sh", "-c", "while :; do :; done"], name=f"busy{secrets.token_hex(3)}",
                      resources={"cpus": 0.5, "memory": 64 * MIB})
        idle = create(api, image, ["/bin/sleep", "1000"], network_driver="disabled")
        start_detached(api, daemon, busy)
        start_detached(api, daemon, idle)
        yield busy, idle
        for cid in (busy, idle):
            api.post(f"/containers/{cid}/stop")
            api.delete(f"/containers/{cid}")


def samples(daemon, config: dict, count: int) -> list[dict]:
    with connect(daemon, "/containers/stats") as ws:
        ws.send(json.dumps(config))
        assert json.loads(ws.recv(timeout=10))["msg_type"] == "starting"
        return [json.loads(ws.recv(timeout=30)) for _ in range(count)]


def test_samples_of_named_containers(daemon, pair):
    busy, idle = pair
    got = samples(daemon, {"containers": [busy, idle], "interval": 0.5}, 2)
    for sample in got:
        assert sample["time"].endswith("Z")
        by_id = {c["id"]: c for c in sample["containers"]}
        assert set(by_id) == {busy, idle}
        assert 1 < by_id[busy]["cpu_percent"] <= 60  # held to half a CPU by its quota
        assert by_id[idle]["cpu_percent"] < 5
        assert by_id[busy]["memory_limit"] == 64 * MIB and by_id[idle]["memory_limit"] is None
        assert 0 < by_id[busy]["memory"] < 64 * MIB
        assert by_id[busy]["pids"] >= 2 and by_id[busy]["pids_limit"] == 2048
        assert by_id[busy]["net_rx"] is None  # the host's network stack: not the container's to count
        assert by_id[idle]["net_rx"] == 0 and by_id[idle]["net_tx"] == 0  # its own stack, loopback only
        assert by_id[busy]["name"].startswith("busy") and by_id[idle]["name"] is None


def test_all_running_containers_and_one_sample(daemon, pair):
    stream = run_stream(daemon, "/containers/stats", {"interval": 0.2, "stream": False})
    assert stream.close_code == 1000 and stream.close_reason["message"] == "end of stats"
    (sample,) = [json.loads(f) for f in stream.frames[1:]]
    assert set(pair) <= {c["id"] for c in sample["containers"]}


def test_stream_ends_when_its_containers_stop(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"])
    start_detached(api, daemon, cid)
    with connect(daemon, "/containers/stats") as ws:
        ws.send(json.dumps({"containers": [cid], "interval": 0.2}))
        assert json.loads(ws.recv(timeout=10))["msg_type"] == "starting"
        assert json.loads(ws.recv(timeout=10))["containers"][0]["id"] == cid
        api.post(f"/containers/{cid}/stop")
        stream = collect(ws, 30)
    assert stream.close_code == 1000 and stream.close_reason["message"] == "end of stats"
    api.delete(f"/containers/{cid}")


@pytest.mark.parametrize(("config", "message"), [
    ({"containers": ["nosuchcontainer"]}, "invalid parameters: container not found"),
    ({"interval": 0}, "invalid parameters: Expected `float` >= 0.1 - at `$.interval`"),
])
def test_bad_parameters_close_1002(daemon, config, message):
    stream = run_stream(daemon, "/containers/stats", config)
    assert stream.close_code == 1002 and stream.close_reason["message"] == message


def test_top_lists_the_processes(api, pair):
    busy, _ = pair
    deadline = time.monotonic() + 15  # the init forks the command after the start returned
    while len((top := api.get(f"/containers/{busy}/top").json())["processes"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert top["id"] == busy
    commands = [p["command"] for p in top["processes"]]
    assert commands == ["/.init -- /bin/sh -c while :; do :; done", "/bin/sh -c while :; do :; done"]
    init, shell = top["processes"]
    assert shell["ppid"] == init["pid"] and shell["state"] == "R" and shell["cpu_time"] >= 0
    assert shell["user"] == "root" and shell["uid"] == shell["host_uid"] == 0 and shell["rss"] > 0
    status = Path(f"/proc/{shell['pid']}/status").read_text()  # the host's own view of the same process
    assert "Uid:\t0\t0\t0\t0" in status and "/bin/sh" in Path(f"/proc/{shell['pid']}/cmdline").read_text()


def test_top_errors(api, image):
    cid = create(api, image, ["/bin/true"])
    r = api.get(f"/containers/{cid}/top")
    assert r.status_code == 409 and r.json() == {"message": f"container {cid} is not running"}
    assert api.get("/containers/nosuchcontainer/top").status_code == 404
    api.delete(f"/containers/{cid}")


def test_klee_stats_and_top(daemon, pair):
    busy, idle = pair
    r = run_klee(daemon.host, "stats", "--no-stream", busy, idle)
    assert r.returncode == 0, r
    assert r.lines[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%",
                                  "NET", "I/O", "BLOCK", "I/O", "PIDS"]  # fmt: skip
    assert {line.split()[0] for line in r.lines[1:]} == {busy, idle}
    assert "/ 64.00MiB" in next(line for line in r.lines if line.startswith(busy))
    r = run_klee(daemon.host, "stats", "--no-stream", "--output", "json", busy)
    assert [c["id"] for c in json.loads(r.stdout)] == [busy]
    r = run_klee(daemon.host, "top", busy)
    assert r.returncode == 0 and r.lines[0].split()[:3] == ["USER", "PID", "PPID"]
    assert r.lines[-1].endswith("/bin/sh -c while :; do :; done")
    r = run_klee(daemon.host, "stats", "nosuchcontainer")
    assert r.returncode == 125 and r.stderr == "invalid parameters: container not found\n"
