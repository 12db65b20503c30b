"""Restart policies against real runc: back-off, a user's stop, on-failure's limit, daemon start,
and the back-off racing stop and rm (docs/operations.md, "Restart policies").

Nothing here asserts how fast anything is: the back-off is checked as a lower bound (a restart
never comes before its delay), which holds on any machine however busy.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.cli import run_klee
from tests.conftest import require_root_runtime
from tests.daemon import running_daemon
from tests.integration.test_containers import create, start_detached
from tests.invariants import assert_clean
from tests.wsapi import connect, create_image

ROUNDS = int(os.environ.get("KLEENE_RACE_ROUNDS", "8"))
SEED = int(os.environ.get("KLEENE_RACE_SEED", str(secrets.randbits(32))))
CRASH = ["/bin/sh", "-c", "exit 3"]
EVENT_SLACK = 0.02  # seconds: a `die` event goes out just after the restart was scheduled


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"rbox:{secrets.token_hex(3)}")


def inspect(api, cid: str) -> dict:
    return api.get(f"/containers/{cid}/inspect").json()["container"]


def wait_for(api, cid: str, done, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        c = inspect(api, cid)
        if done(c):
            return c
        assert time.monotonic() < deadline, f"{cid}: {what}: {c}"
        time.sleep(0.05)


class EventLog:
    """The container events of one container, collected from `/events` in a thread."""

    def __init__(self, daemon, cid: str) -> None:
        self.events: list[dict] = []
        self._ws = connect(daemon, "/events").__enter__()  # left in close()
        self._ws.send(json.dumps({"filters": {"type": ["container"], "object": [cid]}}))
        assert json.loads(self._ws.recv(timeout=10))["msg_type"] == "starting"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                self.events.append(json.loads(self._ws.recv()))
        except Exception:
            return

    def actions(self) -> list[str]:
        return [e["action"] for e in list(self.events)]

    def wait(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.actions()):
            assert time.monotonic() < deadline, self.actions()
            time.sleep(0.02)

    def close(self) -> None:
        self._ws.__exit__(None, None, None)
        self._thread.join(10)


def test_policy_is_validated_and_shown(api, image):
    cid = create(api, image, ["/bin/true"], restart_policy="on-failure:4")
    c = inspect(api, cid)
    assert (c["restart_policy"], c["restart"], c["restart_count"], c["restarting"]) == ("no", "on-failure:4", 0, False)
    assert api.post(f"/containers/{cid}/update", json={"restart_policy": "unless-stopped"}).status_code == 201
    c = inspect(api, cid)
    assert (c["restart_policy"], c["restart"]) == ("on-startup", "unless-stopped")  # upstream's view: autorun
    r = api.post(f"/containers/{cid}/update", json={"restart_policy": "always:3"})
    assert r.status_code == 409 and r.json()["message"] == ("an error ocurred while updating the container: invalid "
                                                            "restart policy 'always:3': only on-failure takes a "
                                                            "maximum retry count")
    r = api.post("/containers/create", json={"image": image, "restart_policy": "sometimes"})
    assert r.status_code == 404 and "invalid restart policy 'sometimes'" in r.json()["message"]
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_a_crashing_container_is_restarted_with_back_off_until_a_user_stops_it(api, daemon, image):
    cid = create(api, image, CRASH, restart_policy="always")
    events = EventLog(daemon, cid)
    try:
        start_detached(api, daemon, cid)
        events.wait(lambda a: a.count("restart") >= 4)
        c = inspect(api, cid)
        assert c["restart_count"] >= 4 and c["exit_code"] == 3 and c["restart"] == "always"
        stopped = run_klee(daemon.host, "container", "stop", cid)  # during a back-off or a run: both end it
        assert stopped.returncode == 0 and stopped.lines == [cid], stopped
        c = inspect(api, cid)
        assert not c["running"] and not c["restarting"]
        count = c["restart_count"]
        log = [e for e in list(events.events)]
    finally:
        events.close()
    # Each restart came at least its back-off after the exit before it: 100 ms, then doubling.
    dies = [e for e in log if e["action"] == "die"]
    starts = [e for e in log if e["action"] == "start"]
    assert all(e["attributes"]["exit_code"] == "3" for e in dies[:4])
    for n in range(4):
        waited = (starts[n + 1]["time_nano"] - dies[n]["time_nano"]) / 1e9
        assert waited >= 0.1 * 2 ** n - EVENT_SLACK, (n, waited)
    restarts = [e for e in log if e["action"] == "restart"]
    assert [int(e["attributes"]["restart_count"]) for e in restarts[:4]] == [1, 2, 3, 4]
    # No restart after the stop: the pending one was cancelled, none is scheduled. The longest
    # back-off it could have had is the window we watch.
    window = min(0.1 * 2 ** count, 60) + 0.5
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        c = inspect(api, cid)
        assert not c["running"] and not c["restarting"] and c["restart_count"] == count, c
        time.sleep(0.1)
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_a_stop_of_a_running_always_container_ends_restarting(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"], restart_policy="always")
    start_detached(api, daemon, cid)
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    c = inspect(api, cid)
    assert not c["running"] and not c["restarting"] and c["restart_count"] == 0
    assert api.post(f"/containers/{cid}/stop").json()["message"] == "container not running"
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_on_failure_stops_after_its_retries_and_a_clean_exit_is_not_retried(api, daemon, image):
    cid = create(api, image, CRASH, restart_policy="on-failure:2")
    events = EventLog(daemon, cid)
    try:
        start_detached(api, daemon, cid)
        c = wait_for(api, cid, lambda c: c["restart_count"] == 2 and not c["running"] and not c["restarting"],
                     "two restarts, then stopped")
        events.wait(lambda a: a.count("die") == 3)
        assert c["exit_code"] == 3
        assert events.actions().count("restart") == 2 and events.actions().count("start") == 3
    finally:
        events.close()
    clean = create(api, image, ["/bin/true"], restart_policy="on-failure")
    start_detached(api, daemon, clean)
    c = wait_for(api, clean, lambda c: c["finished_at"] is not None and not c["running"], "exited")
    assert (c["exit_code"], c["restart_count"], c["restarting"]) == (0, 0, False)
    # A user's start begins the count afresh.
    start_detached(api, daemon, cid)
    wait_for(api, cid, lambda c: c["restart_count"] == 2 and not c["running"] and not c["restarting"], "again")
    for container in (cid, clean):
        assert api.delete(f"/containers/{container}").status_code == 200


def test_an_update_to_a_policy_that_never_restarts_ends_restarting(api, daemon, image):
    cid = create(api, image, ["/bin/sh", "-c", "exit 1"], restart_policy="always")
    start_detached(api, daemon, cid)
    deadline = time.monotonic() + 30
    while True:  # until the update lands in a back-off (restarting before, and no restart after it)
        before = inspect(api, cid)
        if before["restarting"]:
            assert api.post(f"/containers/{cid}/update", json={"restart_policy": "no"}).status_code == 201
            after = inspect(api, cid)
            if after["restart_count"] == before["restart_count"] and not after["running"]:
                break
            assert api.post(f"/containers/{cid}/update", json={"restart_policy": "always"}).status_code == 201
        assert time.monotonic() < deadline, before
        time.sleep(0.01)
    assert not after["restarting"] and (after["restart"], after["restart_policy"]) == ("no", "no")
    assert api.post(f"/containers/{cid}/stop").json()["message"] == "container not running"
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_rm_cancels_a_pending_restart(api, daemon, image):
    cid = create(api, image, ["/bin/sh", "-c", "sleep 0.2; exit 1"], restart_policy="always")
    start_detached(api, daemon, cid)
    wait_for(api, cid, lambda c: c["restarting"] or c["restart_count"] > 0, "a restart")
    deadline = time.monotonic() + 30
    while (r := api.delete(f"/containers/{cid}")).status_code != 200:  # refused while it runs: retry in a back-off
        assert r.status_code == 409 and time.monotonic() < deadline, r.text
        time.sleep(0.01)
    assert api.get(f"/containers/{cid}/inspect").status_code == 404


def test_restart_back_off_racing_stop_and_rm(api, daemon, image):
    """A crash loop (short runs: the back-off grows) against a stop then rm at a random moment:
    the container always ends stopped and removed, never running after the stop returned."""
    rng = random.Random(f"{SEED}:restart-race")
    for round_ in range(ROUNDS):
        cid = create(api, image, ["/bin/sh", "-c", "exit 1"], restart_policy=rng.choice(["always", "on-failure"]))
        start_detached(api, daemon, cid)
        time.sleep(rng.uniform(0, 0.5))  # jitter: the stop lands in a run, a back-off, or a restart
        r = api.post(f"/containers/{cid}/stop")
        assert r.status_code in (200, 404), (SEED, round_, r.text)
        c = inspect(api, cid)
        assert not c["running"] and not c["restarting"], (SEED, round_, c)
        if r.status_code == 404:  # it had exited and no restart was pending: the count is final
            assert r.json()["message"] == "container not running"
        r = api.delete(f"/containers/{cid}")
        assert r.status_code == 200, (SEED, round_, r.text)
    assert_clean(daemon)


@pytest.fixture
def fresh():
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-policies-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


def test_daemon_start_honours_always_and_unless_stopped(fresh):
    image = create_image(fresh)
    with fresh.client() as api:
        ids = {policy: create(api, image, ["/bin/sleep", "1000"], restart_policy=policy)
               for policy in ("always", "unless-stopped", "on-failure", "no")}
        stopped_unless = create(api, image, ["/bin/sleep", "1000"], restart_policy="unless-stopped")
        stopped_always = create(api, image, ["/bin/sleep", "1000"], restart_policy="always")
        for cid in (*ids.values(), stopped_unless, stopped_always):
            start_detached(api, fresh, cid)
        for cid in (stopped_unless, stopped_always):
            assert api.post(f"/containers/{cid}/stop").status_code == 200
    fresh.stop()  # the shutdown's stops are not a user's: unless-stopped comes back
    fresh.start()
    with fresh.client() as api:
        for cid in (ids["always"], ids["unless-stopped"], stopped_always):
            wait_for(api, cid, lambda c: c["running"], "started with the daemon", timeout=30)
        for cid in (ids["on-failure"], ids["no"], stopped_unless):
            c = inspect(api, cid)
            assert not c["running"] and not c["restarting"], c
        for cid in (ids["always"], ids["unless-stopped"], stopped_always):
            assert api.post(f"/containers/{cid}/stop").status_code == 200
        for cid in (*ids.values(), stopped_unless, stopped_always):
            assert api.delete(f"/containers/{cid}").status_code == 200
    assert_clean(fresh)


def test_a_daemon_killed_during_crash_loops_recovers_them_by_policy(fresh):
    """kill -9 while containers crash and wait out back-offs: the next daemon leaves nothing behind
    of the old runs and starts what the policies say (a user-stopped unless-stopped stays stopped)."""
    image = create_image(fresh)
    with fresh.client() as api:
        looping = create(api, image, CRASH, restart_policy="always")
        stopped = create(api, image, CRASH, restart_policy="unless-stopped")
        failing = create(api, image, CRASH, restart_policy="on-failure")
        for cid in (looping, stopped, failing):
            start_detached(api, fresh, cid)
        for cid in (looping, stopped, failing):
            wait_for(api, cid, lambda c: c["restart_count"] >= 2, "crash looping")
        assert api.post(f"/containers/{stopped}/stop").status_code == 200
    fresh.kill()
    fresh.start()
    with fresh.client() as api:
        wait_for(api, looping, lambda c: c["restart_count"] >= 1, "crash looping again after the restart")
        for cid in (stopped, failing):  # a user stopped one; on-failure does not start with the daemon
            c = inspect(api, cid)
            assert not c["running"] and not c["restarting"] and c["finished_at"] is not None, c
        assert api.post(f"/containers/{looping}/stop").status_code == 200
        for cid in (looping, stopped, failing):
            assert api.delete(f"/containers/{cid}").status_code == 200
    assert_clean(fresh)


def test_prune_keeps_a_container_waiting_to_restart(fresh):
    image = create_image(fresh)
    with fresh.client() as api:
        cid = create(api, image, ["/bin/sh", "-c", "sleep 0.3; exit 1"], restart_policy="always")
        stopped = create(api, image, ["/bin/true"])
        start_detached(api, fresh, cid)
        pruned: list[str] = []
        deadline = time.monotonic() + 60
        while True:  # until a prune lands within one back-off (restarting before and after, same count)
            before = inspect(api, cid)
            if before["restarting"]:
                pruned += api.post("/containers/prune").json()
                after = inspect(api, cid)
                if after["restarting"] and after["restart_count"] == before["restart_count"]:
                    break
            assert time.monotonic() < deadline, before
            time.sleep(0.01)
        assert cid not in pruned and stopped in pruned
        assert api.post(f"/containers/{cid}/stop").status_code == 200
        assert api.post("/containers/prune").json() == [cid]
