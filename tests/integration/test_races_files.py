"""Races of `cp` and `commit` with the calls that change a container's state (start, stop, rm),
on the race suite's daemon and terms (tests/integration/test_races.py): bounded rounds, random
jitter, no internal error whatever the interleaving, the pair's own rule, and no mount left."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.daemon import Daemon
from tests.integration import test_races as races
from tests.integration.test_races import (
    ROUNDS,
    SEED,
    at_once,
    cleanup,
    create,
    no_server_error,
    remove_forcibly,
    start,
)
from tests.invariants import assert_clean
from tests.wsapi import connect

# The race suite's fixtures: a daemon of this module's own, its image, a client, a seeded random.
racing, image, api, rng = races.racing, races.image, races.api, races.rng


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(daemon: Daemon, cid: str, path: str, data: bytes) -> dict[str, Any]:
    with connect(daemon, f"/containers/{cid}/archive/put") as ws:
        ws.send(json.dumps({"path": path}))
        try:
            ws.recv(timeout=60)
            ws.send(data)
            ws.send(b"")
            while True:
                ws.recv(timeout=60)
        except ConnectionClosed:
            pass
        return {"close_code": ws.close_code, "close_reason": json.loads(ws.close_reason or "null")}


def download(daemon: Daemon, cid: str, path: str) -> dict[str, Any]:
    received = bytearray()
    with connect(daemon, f"/containers/{cid}/archive/get") as ws:
        ws.send(json.dumps({"path": path}))
        try:
            while True:
                frame = ws.recv(timeout=60)
                if isinstance(frame, bytes):
                    received += frame
        except ConnectionClosed:
            pass
        return {"close_code": ws.close_code, "close_reason": json.loads(ws.close_reason or "null"),
                "data": bytes(received)}


def mounted(daemon: Daemon, cid: str) -> bool:
    return f"{daemon.state_root}/containers/{cid}/rootfs " in Path("/proc/self/mountinfo").read_text()


def test_upload_racing_start_and_remove(racing, api, image, rng):
    for i in range(ROUNDS):
        cid = create(api, image, ["/bin/sleep", "2"])
        payload = _tar(f"up{i}", b"data")
        put, started, removal = at_once(rng, lambda cid=cid, payload=payload: upload(racing, cid, "/tmp", payload),
                                        lambda cid=cid: start(racing, api, cid),
                                        lambda cid=cid: remove_forcibly(api, cid))
        no_server_error(put, started, *removal)
        assert put["close_code"] in (1000, 1002), f"seed {SEED}: {put}"
        if put["close_code"] == 1002:  # refused before it began: gone, or busy starting or stopping
            message = put["close_reason"]["message"]
            assert "not found" in message or "container is" in message, f"seed {SEED}: {put}"
        if api.get(f"/containers/{cid}/inspect").status_code == 200 and put["close_code"] == 1000:
            r = api.get(f"/containers/{cid}/archive/stat", params={"path": f"/tmp/up{i}"})
            assert r.status_code in (200, 409), f"seed {SEED}: {r.text}"  # 409: caught starting or stopping
        cleanup(api, cid)
        assert not mounted(racing, cid)
    assert_clean(racing)


def test_download_racing_stop(racing, api, image, rng):
    for _ in range(ROUNDS):
        cid = create(api, image, ["/bin/sleep", "30"])
        assert start(racing, api, cid)["close_code"] == 1001
        got, stopped = at_once(rng, lambda cid=cid: download(racing, cid, "/bin"),
                               lambda cid=cid: api.post(f"/containers/{cid}/stop"))
        no_server_error(got, stopped)
        assert stopped.status_code == 200, f"seed {SEED}: {stopped.text}"
        if got["close_code"] == 1000:  # the whole tree, whichever side of the stop it ran on
            with tarfile.open(fileobj=io.BytesIO(got["data"])) as tar:
                assert "bin/busybox" in tar.getnames()
        else:
            assert got["close_code"] == 1002 and "container is stopping" in got["close_reason"]["message"], got
        cleanup(api, cid)
        assert not mounted(racing, cid)
    assert_clean(racing)


def test_commit_racing_start(racing, api, image, rng):
    for _ in range(ROUNDS):
        cid = create(api, image, ["/bin/sh", "-c", "sleep 1"])
        committed, started = at_once(rng, lambda cid=cid: api.post(f"/containers/{cid}/commit", json={}),
                                     lambda cid=cid: start(racing, api, cid))
        no_server_error(committed, started)
        assert committed.status_code in (201, 409), f"seed {SEED}: {committed.text}"
        if committed.status_code == 201:  # a whole image: listed, and runnable
            new = committed.json()["id"]
            assert new in [i["id"] for i in api.get("/images/list").json()]
            api.post(f"/containers/{cid}/stop")
            check = create(api, new, ["/bin/true"])
            assert start(racing, api, check)["close_code"] == 1001
            cleanup(api, check)
            cleanup(api, cid)
            assert api.delete(f"/images/{new}").status_code == 200
        else:
            assert "stop it before committing" in committed.json()["message"]
        cleanup(api, cid)
        assert not mounted(racing, cid)
    assert_clean(racing)
