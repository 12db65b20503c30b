"""Attach, logs and events against a real daemon and real runc containers."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.daemon import ROOT, running_daemon
from tests.wsapi import Stream, collect, connect, create_image, exec_stream

KLEE = [sys.executable, "-m", "klee"]
GO = "read go"  # containers wait for a line on stdin, so readers can be in place before output starts


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"streams:{secrets.token_hex(3)}")


def create(api, image: str, cmd: list[str]) -> str:
    r = api.post("/containers/create", json={"image": image, "cmd": cmd, "network_driver": "host"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_detached(api, daemon, cid: str, tty: bool = False) -> None:
    eid = api.post("/exec/create", json={"container_id": cid, "tty": tty}).json()["id"]
    assert exec_stream(daemon, eid, attach=False).close_code == 1001


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


@contextlib.contextmanager
def attach(daemon, cid: str, **config) -> Iterator[ClientConnection]:
    with connect(daemon, f"/containers/{cid}/attach") as ws:
        ws.send(json.dumps({"multiplex": True, **config}))
        yield ws


def demux(stream: Stream) -> dict[int, bytes]:
    out = {1: b"", 2: b""}
    for frame in stream.frames[1:] if stream.starting else stream.frames:
        assert isinstance(frame, bytes)
        out[frame[0]] += frame[1:]
    return out


def read_until(ws, needle: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        seen += frame[1:] if isinstance(frame, bytes) else b""
    return seen


def logs(daemon, cid: str, **config) -> Stream:
    with connect(daemon, f"/containers/{cid}/logs") as ws:
        ws.send(json.dumps(config))
        return collect(ws, 120)


def wait_stopped(api, cid: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container = api.get(f"/containers/{cid}/inspect").json()["container"]
        if not container["running"] and container["finished_at"]:  # finished_at: its cleanup has run
            return container
        time.sleep(0.05)
    raise AssertionError(f"{cid} did not finish")


def test_attach_to_a_running_container_and_interact(api, daemon, image):
    cid = create(api, image, sh('echo ready; while read line; do echo "got $line"; echo "to err" >&2; '
                                '[ "$line" = quit ] && exit 5; done'))
    start_detached(api, daemon, cid)
    with attach(daemon, cid, logs=5) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"msg_type": "starting", "message": "", "data": ""}
        assert read_until(ws, b"ready") == b"ready\n"  # a recent line, from before the attach
        ws.send(b"hello\n")
        assert b"got hello" in read_until(ws, b"got hello")
        ws.send("quit\n")  # a TEXT frame that is not a resize is input too
        stream = collect(ws, 30)
    assert stream.close_code == 1000
    assert stream.close_reason == {"msg_type": "closing", "data": "",
                                   "message": f"container {cid} exited with exit-code 5"}
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["exit_code"] == 5
    err = logs(daemon, cid, stdout=False)
    assert demux(err)[2] == b"to err\n" * 2
    api.delete(f"/containers/{cid}")


def test_two_attachers_and_detach_leaves_the_container_running(api, daemon, image):
    cid = create(api, image, sh('while read line; do echo "got $line"; done'))
    start_detached(api, daemon, cid)
    with attach(daemon, cid) as first, attach(daemon, cid, detach_keys="ctrl-x") as second:
        for ws in (first, second):
            assert json.loads(ws.recv(timeout=10))["msg_type"] == "starting"
        first.send(b"one\n")
        for ws in (first, second):
            assert read_until(ws, b"got one") == b"got one\n"
        second.send(b"two\n")
        for ws in (first, second):
            assert read_until(ws, b"got two") == b"got two\n"
        first.send(b"\x10\x11")  # ctrl-p ctrl-q
        detached = collect(first, 10)
        second.send(b"\x18")  # ctrl-x
        assert collect(second, 10).close_reason["message"] == f"detached from container {cid}"
    assert detached.close_code == 1000
    assert detached.close_reason == {"msg_type": "closing", "message": f"detached from container {cid}", "data": ""}
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["running"] is True
    with attach(daemon, cid) as again:
        assert json.loads(again.recv(timeout=10))["msg_type"] == "starting"
        again.send(b"three\n")
        assert b"got three" in read_until(again, b"got three")
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    with attach(daemon, cid) as stopped:
        refused = collect(stopped, 10)
    assert refused.close_code == 1011 and refused.close_reason["data"] == f"container {cid} is not running"
    api.delete(f"/containers/{cid}")


def test_attach_to_a_tty_container_resizes_its_terminal(api, daemon, image):
    cid = create(api, image, ["/bin/sh"])
    start_detached(api, daemon, cid, tty=True)
    with attach(daemon, cid) as ws:
        assert json.loads(ws.recv(timeout=10))["data"] == "tty"
        ws.send(json.dumps({"type": "resize", "rows": 33, "cols": 101}))
        ws.send(b"stty size\n")
        assert b"33 101" in read_until(ws, b"33 101")
        ws.send(b"exit 2\n")
        stream = collect(ws, 30)
    assert stream.close_reason["message"] == f"container {cid} exited with exit-code 2"
    api.delete(f"/containers/{cid}")


def test_logs_of_a_stopped_container(api, daemon, image):
    cid = create(api, image, sh("echo out1; echo err1 >&2; echo out2; printf partial"))
    start_detached(api, daemon, cid)
    wait_stopped(api, cid)
    everything = logs(daemon, cid)
    assert everything.starting is not None and everything.close_code == 1000
    assert everything.close_reason == {"msg_type": "closing", "message": "end of log", "data": ""}
    assert demux(everything) == {1: b"out1\nout2\npartial", 2: b"err1\n"}
    # stdout and stderr are separate pipes, read in no fixed order: select one stream to count lines.
    assert demux(logs(daemon, cid, tail=1, stderr=False)) == {1: b"out2\npartial", 2: b""}
    assert demux(logs(daemon, cid, tail=1, stdout=False)) == {1: b"", 2: b"err1\n"}
    stamped = demux(logs(daemon, cid, timestamps=True, stderr=False))[1].split(b"\n")
    assert len(stamped) == 3 and all(len(line) > 31 and line[30:31] == b" " for line in stamped)
    assert demux(logs(daemon, cid, since=time.time() + 60)) == {1: b"", 2: b""}
    assert demux(logs(daemon, cid, follow=True)) == demux(everything)  # stopped: follow ends at once
    bad = logs(daemon, cid, tail=-1)
    assert bad.close_code == 1002 and "invalid tail" in bad.close_reason["message"]
    missing = logs(daemon, "nonexisting")
    assert missing.close_code == 1002 and missing.close_reason["message"] == "invalid parameters: container not found"
    api.delete(f"/containers/{cid}")
    assert not (daemon.state_root / "logs" / cid).exists()


def test_follow_survives_rotation_and_sees_the_end(tmp_path):
    with running_daemon(tmp_path, extra={"log_max_size": 4096, "log_max_files": 4}) as daemon, \
            daemon.client() as api:
        image = create_image(daemon, tag="rotation")
        # 1500 lines, about 70 KB on disk: some 12 rotations of 4 KiB files. Each burst waits
        # for a line on stdin, sent once the follower has the previous burst: the container (its
        # monitor writes the log, whatever the daemon does) never gets more than a burst ahead.
        bursts, per_burst = 60, 25
        cid = create(api, image, sh(f"i=0; while [ $i -lt {bursts} ]; do read go; seq $((i*{per_burst})) "
                                    f"$((i*{per_burst}+{per_burst - 1})); i=$((i+1)); done"))
        start_detached(api, daemon, cid)
        with connect(daemon, f"/containers/{cid}/logs") as follower, attach(daemon, cid) as starter:
            follower.send(json.dumps({"follow": True}))
            assert json.loads(follower.recv(timeout=10))["msg_type"] == "starting"
            assert json.loads(starter.recv(timeout=10))["msg_type"] == "starting"
            seen = b""
            for burst in range(bursts):
                starter.send(b"go\n")
                seen += read_until(follower, b"\n%d\n" % ((burst + 1) * per_burst - 1), timeout=60)
            followed = collect(follower, 120)
        assert followed.close_reason == {"msg_type": "closing", "message": "end of log", "data": ""}
        assert seen + demux(followed)[1] == b"".join(b"%d\n" % i for i in range(bursts * per_burst))
        # The monitor writes live.log; the daemon renames it to the next generation once it
        # holds log_max_size bytes (it looks every log_max_size / 16 bytes of output, so a file
        # ends a little past it) and keeps log_max_files files, the live one included.
        files = sorted((daemon.state_root / "logs" / cid).iterdir())
        assert len(files) == 4 and files[-1].name == "live.log" and int(files[-2].stem) > 5
        assert all(f.stat().st_size <= 2 * 4096 for f in files)
        api.delete(f"/containers/{cid}")


def test_events_for_a_full_cycle_in_order(api, daemon, image):
    with connect(daemon, "/events") as events:
        events.send(json.dumps({"filters": {"type": ["container", "exec"]}}))
        assert json.loads(events.recv(timeout=10))["msg_type"] == "starting"
        cid = create(api, image, ["/bin/sleep", "1000"])
        start_detached(api, daemon, cid)
        eid = api.post("/exec/create", json={"container_id": cid, "cmd": ["/bin/sh", "-c", "exit 4"]}).json()["id"]
        exec_stream(daemon, eid, start_container=False)
        assert api.post(f"/containers/{cid}/stop").status_code == 200
        assert api.delete(f"/containers/{cid}").status_code == 200
        seen = []
        while not seen or seen[-1]["action"] != "remove":
            event = json.loads(events.recv(timeout=30))
            if event["id"] in (cid, eid):
                seen.append(event)
    assert [(e["type"], e["action"]) for e in seen] == [
        ("container", "create"), ("container", "start"), ("exec", "start"), ("exec", "die"),
        ("container", "die"), ("container", "stop"), ("container", "remove")]
    assert seen[3]["attributes"] == {"container": cid, "exit_code": "4"}
    assert seen[4]["attributes"]["exit_code"] in ("137", "143")
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    with connect(daemon, "/events") as replay:
        replay.send(json.dumps({"since": seen[0]["time"], "until": time.time(), "filters": {"object": [cid]}}))
        replayed = collect(replay, 10)
    assert [json.loads(f)["action"] for f in replayed.frames[1:]] == [e["action"] for e in seen]
    assert replayed.close_reason["message"] == "end of events"
    with connect(daemon, "/events") as bad:
        bad.send(json.dumps({"filters": {"colour": ["red"]}}))
        refused = collect(bad, 10)
    assert refused.close_code == 1002 and "invalid filter" in refused.close_reason["message"]


def test_stalled_readers_do_not_slow_a_container_writing_as_fast_as_it_can(api, daemon, image):
    lines = 400_000  # 16 MB of output, 32 MB on disk: within the default log limits
    cid = create(api, image, sh(f"{GO}; yes 0123456789012345678901234567890123456789 | head -n {lines}"))
    start_detached(api, daemon, cid)
    with attach(daemon, cid) as stalled_attach, connect(daemon, f"/containers/{cid}/logs") as stalled_follower, \
            connect(daemon, "/events") as stalled_events:
        stalled_follower.send(json.dumps({"follow": True}))
        stalled_events.send(json.dumps({}))
        assert json.loads(stalled_attach.recv(timeout=10))["msg_type"] == "starting"
        stalled_attach.send(b"go\n")  # and from now on, none of the three reads anything
        finished = wait_stopped(api, cid)
        assert finished["exit_code"] == 0
        dropped = collect(stalled_attach, 60)
        assert dropped.close_code == 1011
        assert dropped.close_reason == {"msg_type": "error", "message": "reader too slow: dropped", "data": ""}
        followed = collect(stalled_follower, 120)  # a late reader still gets every line from the disk
        assert followed.close_reason["message"] == "end of log"
        assert demux(followed)[1].count(b"\n") == lines
    on_disk = demux(logs(daemon, cid))[1]
    assert on_disk.count(b"\n") == lines and set(on_disk.split(b"\n")[:-1]) == {b"0123456789" * 4}
    api.delete(f"/containers/{cid}")


def klee(daemon, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*KLEE, "--host", daemon.host, *args], capture_output=True, input=input, timeout=60,
                          cwd=ROOT)


def test_klee_logs_events_and_attach(api, daemon, image, tmp_path: Path):
    since = time.time()
    cid = create(api, image, sh("echo to-out; echo to-err >&2"))
    start_detached(api, daemon, cid)
    wait_stopped(api, cid)
    shown = klee(daemon, "logs", cid)
    assert shown.returncode == 0 and shown.stdout == b"to-out\n" and shown.stderr == b"to-err\n"
    tail = klee(daemon, "logs", "--tail", "2", "-t", cid)
    assert tail.stdout.endswith(b" to-out\n") and tail.stdout[30:31] == b" " and tail.stderr.endswith(b" to-err\n")
    listed = klee(daemon, "events", "--since", str(since), "--until", "0s", "--filter", f"object={cid}")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[1:4] for line in listed.stdout.decode().splitlines()][:3] == [
        ["container", "create", cid], ["container", "start", cid], ["container", "die", cid]]
    api.delete(f"/containers/{cid}")

    cid = create(api, image, sh('read x; echo "got $x"; exit 3'))
    start_detached(api, daemon, cid)
    attached = klee(daemon, "attach", cid, input=b"hi\n")
    assert attached.stdout == b"got hi\n" and attached.returncode == 3, attached
    missing = klee(daemon, "logs", "nonexisting")
    assert missing.returncode != 0 and b"container not found" in missing.stderr
    api.delete(f"/containers/{cid}")


def test_a_reader_gone_mid_stream_leaves_nothing_behind(api, daemon, image):
    cid = create(api, image, sh(f"{GO}; while :; do echo tick; sleep 0.01; done"))
    start_detached(api, daemon, cid)
    for _ in range(3):
        with attach(daemon, cid) as ws:
            ws.recv(timeout=10)
            ws.send(b"go\n")
            read_until(ws, b"tick")
        with connect(daemon, f"/containers/{cid}/logs") as follower:
            follower.send(json.dumps({"follow": True, "tail": 1}))
            follower.recv(timeout=10)
            follower.recv(timeout=10)
    # The daemon is fine: a fresh attach works, sees ticks, and the end when the container stops.
    with pytest.raises(ConnectionClosed), attach(daemon, cid) as ws:
        ws.recv(timeout=10)
        read_until(ws, b"tick")
        api.post(f"/containers/{cid}/stop")
        while True:
            ws.recv(timeout=10)
    api.delete(f"/containers/{cid}")
