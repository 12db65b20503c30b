"""Healthchecks against real runc: the image's HEALTHCHECK and the create's override, status in
inspect, `klee container ls` and events, probe timeouts, and probes ending with the container
(docs/operations.md, "Healthchecks")."""

from __future__ import annotations

import json
import os
import random
import secrets
import time

import pytest

from tests.builds import built
from tests.cli import run_klee
from tests.integration.test_containers import create, exec_create, start_detached
from tests.invariants import assert_clean
from tests.wsapi import connect, create_image, exec_stream

ROUNDS = int(os.environ.get("KLEENE_RACE_ROUNDS", "8"))
SEED = int(os.environ.get("KLEENE_RACE_SEED", str(secrets.randbits(32))))
FAST = {"interval": 0.2, "timeout": 5.0, "retries": 2}


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"hbox:{secrets.token_hex(3)}")


def inspect(api, cid: str) -> dict:
    return api.get(f"/containers/{cid}/inspect").json()["container"]


def wait_health(api, cid: str, done, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        c = inspect(api, cid)
        if c["health"] is not None and done(c["health"]):
            return c
        assert time.monotonic() < deadline, c["health"]
        time.sleep(0.05)


def test_an_unhealthy_container_shows_it_and_recovers(api, daemon, image):
    check = {"test": ["CMD-SHELL", "echo probing; test -e /tmp/ok"], **FAST}
    cid = create(api, image, ["/bin/sleep", "1000"], healthcheck=check)
    assert inspect(api, cid)["healthcheck"]["test"] == check["test"] and inspect(api, cid)["health"] is None
    with connect(daemon, "/events") as events:
        events.send(json.dumps({"filters": {"event": ["health_status"], "object": [cid]}}))
        assert json.loads(events.recv(timeout=10))["msg_type"] == "starting"
        start_detached(api, daemon, cid)
        c = wait_health(api, cid, lambda h: h["status"] == "unhealthy")
        health = c["health"]
        assert health["failing_streak"] >= 2 and 2 <= len(health["log"]) <= 5
        assert all(r["exit_code"] == 1 and r["output"] == "probing\n" for r in health["log"])
        row = next(line for line in run_klee(daemon.host, "container", "ls").lines if cid in line)
        assert "running (unhealthy)" in row, row
        assert exec_stream(daemon, exec_create(api, cid, ["/bin/touch", "/tmp/ok"])).close_code == 1000
        c = wait_health(api, cid, lambda h: h["status"] == "healthy")
        assert c["health"]["failing_streak"] == 0 and c["health"]["log"][-1]["exit_code"] == 0
        row = next(line for line in run_klee(daemon.host, "container", "ls").lines if cid in line)
        assert "running (healthy)" in row, row
        seen = [json.loads(events.recv(timeout=10)) for _ in range(2)]
    assert [e["attributes"]["health_status"] for e in seen] == ["unhealthy", "healthy"]
    assert all(e["action"] == "health_status" and e["id"] == cid for e in seen)
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_probes_end_with_the_container(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"], healthcheck={"test": ["CMD", "/bin/true"], **FAST})
    start_detached(api, daemon, cid)
    wait_health(api, cid, lambda h: h["status"] == "healthy" and len(h["log"]) == 5)
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    after_stop = inspect(api, cid)["health"]
    window = time.monotonic() + 10 * FAST["interval"]  # ten intervals: a live monitor would have probed
    while time.monotonic() < window:
        assert inspect(api, cid)["health"] == after_stop
        time.sleep(0.1)
    # A new run starts its health afresh.
    start_detached(api, daemon, cid)
    assert inspect(api, cid)["health"]["status"] == "starting"
    wait_health(api, cid, lambda h: h["status"] == "healthy")
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_a_probe_that_exceeds_its_timeout_is_killed_and_fails(api, daemon, image):
    check = {"test": ["CMD", "/bin/sleep", "1000"], "interval": 0.1, "timeout": 0.3, "retries": 1}
    cid = create(api, image, ["/bin/sleep", "1000"], healthcheck=check)
    start_detached(api, daemon, cid)
    c = wait_health(api, cid, lambda h: h["status"] == "unhealthy")
    assert c["health"]["log"][0] == {**c["health"]["log"][0], "exit_code": -1,
                                     "output": "Health check exceeded timeout (0.3s)"}
    top = api.get(f"/containers/{cid}/top").json()["processes"]
    assert sum("sleep 1000" in p["command"] for p in top) <= 2  # the main process and at most the current probe
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert api.delete(f"/containers/{cid}").status_code == 200


def test_the_image_healthcheck_and_the_create_flags(api, daemon, image, tmp_path):
    result = built(daemon, tmp_path, f"FROM {image}\nHEALTHCHECK --interval=200ms --retries=1 CMD exit 3\n")
    built_image = result.close[2]
    plain = create(api, built_image, ["/bin/sleep", "1000"])
    assert inspect(api, plain)["healthcheck"]["test"] == ["CMD-SHELL", "exit 3"]
    r = run_klee(daemon.host, "create", "--no-healthcheck", built_image, "/bin/sleep", "1000")
    disabled = r.lines[-1]
    assert r.returncode == 0 and inspect(api, disabled)["healthcheck"] is None
    r = run_klee(daemon.host, "create", "--health-cmd", "exit 0", "--health-interval", "150ms", built_image,
                 "/bin/sleep", "1000")
    overridden = r.lines[-1]
    assert r.returncode == 0, r
    check = inspect(api, overridden)["healthcheck"]
    assert (check["test"], check["interval"], check["retries"]) == (["CMD-SHELL", "exit 0"], 0.15, 1)
    for cid in (plain, disabled, overridden):
        start_detached(api, daemon, cid)
    wait_health(api, plain, lambda h: h["status"] == "unhealthy")
    wait_health(api, overridden, lambda h: h["status"] == "healthy")
    assert inspect(api, disabled)["health"] is None
    bad = run_klee(daemon.host, "create", "--health-interval", "soon", built_image)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--health-interval" in bad.stdout + bad.stderr
    r = api.post("/containers/create", json={"image": image, "healthcheck": {"test": ["CMD"]}})
    assert r.status_code == 404 and r.json()["message"] == "healthcheck CMD requires a command"
    for cid in (plain, disabled, overridden):
        assert api.post(f"/containers/{cid}/stop").status_code == 200
        assert api.delete(f"/containers/{cid}").status_code == 200


def test_probes_racing_stop_and_rm(api, daemon, image):
    """Probes every 50 ms (some timing out) against a stop and rm at a random moment: no probe
    survives its container and nothing leaks (the invariants run after this test too)."""
    rng = random.Random(f"{SEED}:health-race")
    check = {"test": ["CMD-SHELL", "sleep 0.$RANDOM"], "interval": 0.05, "timeout": 0.2, "retries": 1}
    for round_ in range(ROUNDS):
        cid = create(api, image, ["/bin/sleep", "1000"], healthcheck=check)
        start_detached(api, daemon, cid)
        time.sleep(rng.uniform(0, 0.4))  # jitter: the stop lands before, during or between probes
        assert api.post(f"/containers/{cid}/stop").status_code == 200, (SEED, round_)
        frozen = inspect(api, cid)["health"]
        assert api.get(f"/containers/{cid}/top").status_code in (404, 409), (SEED, round_)
        assert inspect(api, cid)["health"] == frozen, (SEED, round_)
        assert api.delete(f"/containers/{cid}").status_code == 200, (SEED, round_)
    assert_clean(daemon)
