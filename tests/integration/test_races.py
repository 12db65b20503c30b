"""Race suite: pairs of API calls on one object, sent at once with random jitter, for bounded rounds.

Each round fires both calls from their own threads, each after a random delay of 0-80 ms, so
over the rounds every interleaving the daemon's awaits allow gets a chance. The outcome of a
round may be either call winning; what must hold whatever the interleaving:
- no 5xx and no "internal error" close (every refusal is a clear 4xx or a 1011 with a reason);
- the pair's own rule (an exec runs once; a volume a container mounts survives; a container
  never references a missing image or network; one name, one container);
- `tests.invariants`: no ghost, no orphan directory, no leaked mount, runtime state, cgroup,
  namespace, veth or port rule, no zombie;
- and, at the end, the daemon restarts cleanly (SIGTERM, then kill -9) with the same invariants.

`KLEENE_RACE_ROUNDS` sets the rounds per pair (default 8); `KLEENE_RACE_SEED` replays a run
(the seed is in every failure message).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.invariants import assert_clean
from tests.wsapi import create_image, exec_stream, run_stream

ROUNDS = int(os.environ.get("KLEENE_RACE_ROUNDS", "8"))
SEED = int(os.environ.get("KLEENE_RACE_SEED", str(secrets.randbits(32))))
JITTER = 0.08  # seconds


@pytest.fixture(scope="module")
def racing() -> Iterator[Daemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-race-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


@pytest.fixture(scope="module")
def image(racing: Daemon) -> str:
    return create_image(racing, tag="racebox")


@pytest.fixture
def api(racing: Daemon) -> Iterator[httpx.Client]:
    with racing.client() as client:
        yield client


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{SEED}:{request.node.name}")


def at_once(rng: random.Random, *calls: Callable[[], Any]) -> list[Any]:
    """Run `calls` in threads, each after a random delay; return results (or the exceptions)."""
    results: list[Any] = [None] * len(calls)
    delays = [rng.uniform(0, JITTER) for _ in calls]

    def worker(i: int) -> None:
        time.sleep(delays[i])
        try:
            results[i] = calls[i]()
        except Exception as exc:  # a failed call is an outcome to check, not a crash of the suite
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def no_server_error(*outcomes: Any) -> None:
    """Every outcome is a response below 500, or a stream that did not end in an internal error."""
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), f"seed {SEED}: a call raised {outcome!r}"
        if isinstance(outcome, httpx.Response):
            assert outcome.status_code < 500, f"seed {SEED}: {outcome.status_code} {outcome.text}"
        elif isinstance(outcome, dict) and "close_code" in outcome:
            reason = json.dumps(outcome.get("close_reason"))
            assert "internal error" not in reason, f"seed {SEED}: {outcome}"


def create(api: httpx.Client, image: str, cmd: list[str], **config: Any) -> str:
    body = {"image": image, "cmd": cmd, "network_driver": "host", **config}
    r = api.post("/containers/create", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start(daemon: Daemon, api: httpx.Client, cid: str) -> dict[str, Any]:
    """exec create + a detached start with `start_container` (what `klee start` does)."""
    r = api.post("/exec/create", json={"container_id": cid, "cmd": []})
    if r.status_code != 201:
        return {"close_code": None, "status": r.status_code, "message": r.json().get("message")}
    s = exec_stream(daemon, r.json()["id"], attach=False, start_container=True)
    return {"close_code": s.close_code, "close_reason": s.close_reason}


def remove_forcibly(api: httpx.Client, cid: str) -> list[httpx.Response]:
    """What `klee rm -f` sends: stop, then delete."""
    return [api.post(f"/containers/{cid}/stop"), api.delete(f"/containers/{cid}")]


def cleanup(api: httpx.Client, cid: str) -> None:
    if api.get(f"/containers/{cid}/inspect").status_code == 200:
        api.post(f"/containers/{cid}/stop")
        assert api.delete(f"/containers/{cid}").status_code == 200


def exec_output(daemon: Daemon, api: httpx.Client, cid: str, cmd: list[str]) -> str:
    r = api.post("/exec/create", json={"container_id": cid, "cmd": cmd})
    assert r.status_code == 201, r.text
    return exec_stream(daemon, r.json()["id"]).text


# --- the pairs ---------------------------------------------------------------------------------


def test_remove_forcibly_racing_start(racing, api, image, rng):
    for _ in range(ROUNDS):
        cid = create(api, image, ["/bin/sleep", "30"])
        started, removal = at_once(rng, lambda cid=cid: start(racing, api, cid),
                                   lambda cid=cid: remove_forcibly(api, cid))
        no_server_error(started, *removal)
        stop, delete = removal
        assert stop.status_code in (200, 404) and delete.status_code in (200, 404, 409), (stop.text, delete.text)
        if delete.status_code == 200:  # removed: gone for good, whatever the start did
            assert api.get(f"/containers/{cid}/inspect").status_code == 404
        cleanup(api, cid)
    assert_clean(racing)


def test_one_exec_started_twice_runs_once(racing, api, image, rng):
    cid = create(api, image, ["/bin/sleep", "300"])
    assert start(racing, api, cid)["close_code"] == 1001
    for _ in range(ROUNDS):
        marker = f"/tmp/runs-{secrets.token_hex(4)}"
        r = api.post("/exec/create", json={"container_id": cid, "cmd": ["/bin/sh", "-c", f"echo x >> {marker}"]})
        exec_id = r.json()["id"]
        first, second = at_once(rng, lambda e=exec_id: exec_stream(racing, e), lambda e=exec_id: exec_stream(racing, e))
        codes = sorted([first.close_code, second.close_code])
        assert codes == [1000, 1011], (first, second)
        refused = first if first.close_code == 1011 else second
        assert refused.close_reason["data"] in ("executable already started",
                                                f"could not find execution instance matching '{exec_id}'")
        assert exec_output(racing, api, cid, ["/bin/cat", marker]) == "x\n"
    cleanup(api, cid)
    assert_clean(racing)


def test_volume_remove_racing_container_start_and_create(racing, api, image, rng):
    vol = f"racevol{secrets.token_hex(3)}"
    mount = [{"type": "volume", "source": vol, "destination": "/data"}]
    keeper = create(api, image, ["/bin/sh", "-c", "echo precious > /data/sentinel"], mounts=mount)
    assert exec_output(racing, api, keeper, []) == ""
    for _ in range(ROUNDS):
        cid = create(api, image, ["/bin/sh", "-c", "cat /data/sentinel; sleep 2"], mounts=mount)
        started, removed = at_once(rng, lambda cid=cid: start(racing, api, cid), lambda: api.delete(f"/volumes/{vol}"))
        no_server_error(started, removed)
        assert removed.status_code == 409, removed.text  # mounted by containers: never removed
        cleanup(api, cid)
        # A container created while the volume is being removed: one wins, never half of each.
        created, removed = at_once(rng, lambda: api.post("/containers/create", json={
            "image": image, "network_driver": "host", "mounts": mount, "cmd": ["/bin/true"]}),
            lambda: api.delete(f"/volumes/{vol}"))
        no_server_error(created, removed)
        assert removed.status_code == 409 and created.status_code == 201, (created.text, removed.text)
        cleanup(api, created.json()["id"])
    assert (Path(api.get(f"/volumes/{vol}/inspect").json()["volume"]["mountpoint"]) / "sentinel").read_text() \
        == "precious\n"
    cleanup(api, keeper)
    assert api.delete(f"/volumes/{vol}").status_code == 200
    assert_clean(racing)


def test_network_connect_racing_network_remove(racing, api, image, rng):
    cid = create(api, image, ["/bin/sleep", "300"], network_driver="ipnet")
    assert start(racing, api, cid)["close_code"] == 1001  # running: a connect plugs it at once
    for i in range(ROUNDS):
        name = f"racenet{secrets.token_hex(3)}"
        r = api.post("/networks/create", json={"name": name, "type": "bridge", "subnet": f"10.77.{i}.0/24"})
        assert r.status_code == 201, r.text
        connected, removed = at_once(rng, lambda name=name: api.post("/networks/connect", json={
            "container": cid, "network": name}), lambda name=name: api.delete(f"/networks/{name}"))
        no_server_error(connected, removed)
        assert connected.status_code in (204, 404) and removed.status_code == 200, (connected.text, removed.text)
        endpoints = api.get(f"/containers/{cid}/inspect").json()["container_endpoints"]
        networks = {n["id"] for n in api.get("/networks/list").json()}
        assert all(e["network_id"] in networks for e in endpoints), endpoints
    cleanup(api, cid)
    assert_clean(racing)


def test_image_remove_racing_container_create(racing, api, image, rng):
    for i in range(ROUNDS):
        victim = create_image(racing, tag=f"victim:{i}")
        created, removed = at_once(rng, lambda victim=victim: api.post("/containers/create", json={
            "image": victim, "network_driver": "host"}), lambda victim=victim: api.delete(f"/images/{victim}"))
        no_server_error(created, removed)
        assert (created.status_code, removed.status_code) in ((201, 404), (404, 200)), (created.text, removed.text)
        for c in api.get("/containers/list?all=true").json():
            assert api.get(f"/images/{c['image_id']}/inspect").status_code == 200, c
        if created.status_code == 201:
            cleanup(api, created.json()["id"])
            assert api.delete(f"/images/{victim}").status_code == 200
    assert_clean(racing)


def test_rename_racing_create_of_the_same_name(racing, api, image, rng):
    for _ in range(ROUNDS):
        wanted = f"wanted{secrets.token_hex(3)}"
        cid = create(api, image, ["/bin/true"], name=f"old{secrets.token_hex(3)}")
        renamed, created = at_once(
            rng, lambda cid=cid, wanted=wanted: api.post(f"/containers/{cid}/update", json={"name": wanted}),
            lambda wanted=wanted: api.post("/containers/create", json={"image": image, "name": wanted,
                                                                       "network_driver": "host"}))
        no_server_error(renamed, created)
        holders = [c["id"] for c in api.get("/containers/list?all=true").json() if c["name"] == wanted]
        assert len(holders) == 1, (renamed.text, created.text)
        assert (renamed.status_code == 201) != (created.status_code == 201), (renamed.text, created.text)
        cleanup(api, cid)
        if created.status_code == 201:
            cleanup(api, created.json()["id"])
    assert_clean(racing)


def test_prune_racing_start(racing, api, image, rng):
    for _ in range(ROUNDS):
        cid = create(api, image, ["/bin/sleep", "30"])
        started, pruned = at_once(rng, lambda cid=cid: start(racing, api, cid),
                                  lambda: api.post("/containers/prune"))
        no_server_error(started, pruned)
        exists = api.get(f"/containers/{cid}/inspect").status_code == 200
        assert exists == (cid not in pruned.json()), (started, pruned.json())
        if not exists:  # pruned while stopped: the start must have found it gone
            assert started["close_code"] != 1001, started
        cleanup(api, cid)
    assert_clean(racing)


def test_stop_racing_exec_and_attach(racing, api, image, rng):
    for _ in range(ROUNDS):
        cid = create(api, image, ["/bin/sleep", "30"])
        assert start(racing, api, cid)["close_code"] == 1001

        def attach(cid: str = cid) -> dict[str, Any]:
            s = run_stream(racing, f"/containers/{cid}/attach", {"stdin": False})
            return {"close_code": s.close_code, "close_reason": s.close_reason}

        def exec_in(cid: str = cid) -> dict[str, Any]:
            r = api.post("/exec/create", json={"container_id": cid, "cmd": ["/bin/echo", "hi"]})
            s = exec_stream(racing, r.json()["id"], start_container=False)
            return {"close_code": s.close_code, "close_reason": s.close_reason}

        stopped, attached, executed = at_once(rng, lambda cid=cid: api.post(f"/containers/{cid}/stop"),
                                              attach, exec_in)
        no_server_error(stopped, attached, executed)
        assert stopped.status_code == 200
        cleanup(api, cid)
    assert_clean(racing)


def test_zz_daemon_restarts_clean_after_the_races(racing, api, image):
    """Last in the module: with containers in every state, a SIGTERM restart and a kill -9 restart
    both come back serving, with the invariants intact and nothing lost."""
    running = create(api, image, ["/bin/sleep", "300"], network_driver="ipnet")
    assert start(racing, api, running)["close_code"] == 1001
    stopped = create(api, image, ["/bin/true"], mounts=[{"type": "volume", "source": "keepme",
                                                        "destination": "/k"}])
    for stop in (racing.stop, racing.kill):
        stop()
        racing.start()
        assert_clean(racing)
        with racing.client() as after:
            ids = {c["id"] for c in after.get("/containers/list?all=true").json()}
            assert {running, stopped} <= ids
            assert after.get("/volumes/keepme/inspect").status_code == 200
    with racing.client() as after:
        cleanup(after, running)
        cleanup(after, stopped)
        assert after.delete("/volumes/keepme").status_code == 200

