"""Validation at the edge: names, image references, mount destinations, and user mistakes that
used to come back as "internal error" (issue reproductions, on the session daemon)."""

from __future__ import annotations

import re
import secrets
import time

import pytest

from tests.wsapi import create_image, exec_stream, run_stream

BAD_NAMES = ["", "../x", "a/b", "x\x00y", "bad\n", "-lead", ".hidden", "a" * 129, "sp ace"]


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"valid:{secrets.token_hex(3)}")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_network_names_are_checked(api, name):
    r = api.post("/networks/create", json={"name": name, "type": "loopback"})
    assert r.status_code == 409 and "invalid network name" in r.json()["message"], r.text
    assert all(n["name"] != name for n in api.get("/networks/list").json())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_volume_names_are_checked(api, name):
    r = api.post("/volumes/create", json={"name": name})
    assert r.status_code == 400 and "invalid volume name" in r.json()["message"], r.text


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n])
def test_container_names_are_checked(api, image, name):
    r = api.post("/containers/create", json={"name": name, "image": image, "network_driver": "host"})
    assert r.status_code == 404 and r.json()["message"].endswith(
        ("does not match /?[a-zA-Z0-9][a-zA-Z0-9_.-]+$", "longer than 128 characters")), r.text


def test_names_upstream_accepts_still_work(api, image):
    name = "A1_b.c-" + secrets.token_hex(3)
    r = api.post("/containers/create", json={"name": f"/{name}", "image": image, "network_driver": "host"})
    assert r.status_code == 201, r.text
    assert api.get(f"/containers/{name}/inspect").json()["container"]["name"] == name
    api.delete(f"/containers/{name}")


def test_a_long_container_name_gets_a_shortened_hostname(api, daemon, image):
    name = "n" + secrets.token_hex(3) + "x" * 120  # 127 characters: a valid name, too long for a hostname
    r = api.post("/containers/create", json={"name": name, "image": image, "network_driver": "host",
                                             "cmd": ["/bin/hostname"]})
    assert r.status_code == 201, r.text
    e = api.post("/exec/create", json={"container_id": name}).json()["id"]
    stream = exec_stream(daemon, e)
    assert stream.text == name[:63] + "\n" and stream.close_reason["message"].endswith("exit-code 0"), stream
    api.delete(f"/containers/{name}")


@pytest.mark.parametrize("tag", ["../../x", "x:y\n", "x\x00:1", "a" * 300, "ok:-bad", "ok:" + "t" * 129, "UP per:1"])
def test_image_tags_are_checked(api, image, tag):
    r = api.post(f"/images/{image}/tag", params={"nametag": tag})
    assert r.status_code == 404 and "invalid image" in r.json()["message"], r.text
    assert all(f"{i['name']}:{i['tag']}" != tag for i in api.get("/images/list").json())


def test_image_creation_refuses_a_bad_tag(daemon):
    stream = run_stream(daemon, "/images/create", {"method": "fetch", "url": "file:///nonexisting", "tag": "../x"})
    assert stream.close_code == 1011 and "invalid image name" in stream.close_reason["message"], stream


@pytest.mark.parametrize("destination", ["/proc", "/proc/sys", "/sys/kernel", "/dev/shm", "/", "/.init"])
def test_mount_destinations_the_runtime_owns_are_refused(api, image, destination):
    r = api.post("/containers/create", json={"image": image, "network_driver": "host",
                                             "mounts": [{"type": "volume", "source": "v", "destination": destination}]})
    assert r.status_code == 404 and destination.split("/")[1] in r.json()["message"], r.text
    assert "internal error" not in r.text


def test_missing_executable_exits_127_with_the_reason(api, daemon, image):
    """As docker: a missing executable is the process failing (127), not an internal error."""
    cid = api.post("/containers/create", json={"image": image, "network_driver": "host",
                                               "cmd": ["/bin/sleep", "60"]}).json()["id"]
    e = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    assert exec_stream(daemon, e, attach=False).close_code == 1001
    e = api.post("/exec/create", json={"container_id": cid, "cmd": ["/no/such/binary"]}).json()["id"]
    stream = exec_stream(daemon, e, start_container=False)
    assert stream.close_code == 1000 and stream.close_reason["message"] == f"{e} has exited with exit-code 127"
    assert "no such file or directory" in stream.text.lower() and "internal error" not in stream.text
    api.post(f"/containers/{cid}/stop")
    # The container's own command missing: tini reports it, and the exit code is 127 too.
    api.post(f"/containers/{cid}/update", json={"cmd": ["/no/such/binary"]})
    e = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    stream = exec_stream(daemon, e)
    assert stream.close_reason["message"].endswith("exit-code 127"), stream
    api.delete(f"/containers/{cid}")


def test_internal_errors_name_the_request_in_the_log(api, daemon):
    """Every response names its request; the daemon log carries the same id."""
    r = api.get("/containers/list")
    request_id = r.headers["X-Request-Id"]
    assert len(request_id) == 12
    name = "ok" + secrets.token_hex(3)
    r = api.post("/volumes/create", json={"name": name})
    assert f"request={r.headers['X-Request-Id']}" in daemon.log()
    api.delete(f"/volumes/{name}")


def test_debug_log_times_each_request(api, daemon):
    """At debug level every request leaves one line with its route, status and milliseconds:
    with the host commands' own lines, that is where a call's time goes."""
    r = api.get("/containers/list")
    request_id = r.headers["X-Request-Id"]
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in daemon.log().splitlines()
                 if "request served" in line and f"request={request_id}" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, lines
    assert "path=/containers/list" in lines[0] and "status=200" in lines[0]
    assert re.search(r" ms=\d+\.\d", lines[0]), lines[0]
