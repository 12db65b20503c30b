"""Containers and exec over REST and the /exec/start WebSocket, against real runc."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.wsapi import create_image, exec_stream


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"busybox:{secrets.token_hex(3)}")


def unique(prefix: str = "c") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def create(api, image: str, cmd: list[str] | None = None, **config) -> str:
    body = {"image": image, "cmd": cmd or [], "network_driver": "host", **config}
    r = api.post("/containers/create", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def exec_create(api, container: str, cmd: list[str] | None = None, **config) -> str:
    r = api.post("/exec/create", json={"container_id": container, "cmd": cmd or [], **config})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def run(api, daemon, image: str, cmd: list[str], **config):
    cid = create(api, image, cmd, **config)
    stream = exec_stream(daemon, exec_create(api, cid))
    return cid, stream


def start_detached(api, daemon, cid: str) -> None:
    stream = exec_stream(daemon, exec_create(api, cid), attach=False, start_container="true")
    assert stream.close_code == 1001, stream
    assert stream.close_reason == {"msg_type": "closing", "data": "",
                                   "message": "succesfully started execution instance in detached mode"}


def wait_stopped(api, cid: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = api.get(f"/containers/{cid}/inspect").json()["container"]
        if not c["running"]:
            return c
        time.sleep(0.05)
    raise AssertionError(f"{cid} still running")


def test_run_attached_streams_output_and_exit(api, daemon, image):
    cid, stream = run(api, daemon, image, ["/bin/sh", "-c", "echo hello; echo oops >&2"])
    assert stream.starting == {"msg_type": "starting", "message": "", "data": ""}
    assert sorted(stream.text.splitlines()) == ["hello", "oops"]
    assert stream.close_code == 1000
    eid = stream.close_reason["message"].split()[1]
    assert stream.close_reason == {"msg_type": "closing", "data": "",
                                   "message": f"executable {eid} and its container exited with exit-code 0"}
    container = api.get(f"/containers/{cid}/inspect").json()["container"]
    assert container["running"] is False and container["exit_code"] == 0
    assert container["started_at"] and container["finished_at"]
    assert api.delete(f"/containers/{cid}").json() == {"id": cid}


def test_exit_code_is_reported(api, daemon, image):
    cid, stream = run(api, daemon, image, ["/bin/sh", "-c", "exit 7"])
    assert stream.close_reason["message"].endswith("exited with exit-code 7")
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["exit_code"] == 7


def test_inspect_list_and_remove(api, image):
    name = unique("named")
    cid = create(api, image, ["/bin/true"], name=name, env=["A=1"])
    inspect = api.get(f"/containers/{name}/inspect").json()
    c = inspect["container"]
    assert c["id"] == cid and c["name"] == name and c["running"] is False and c["image_id"]
    assert c["cmd"] == ["/bin/true"] and "A=1" in c["env"] and c["network_driver"] == "host"
    assert inspect["container_endpoints"] == [] and inspect["container_mountpoints"] == []
    assert api.get(f"/containers/{cid[:6]}/inspect").json()["container"]["id"] == cid
    assert cid not in [x["id"] for x in api.get("/containers/list?all=false").json()]
    summary = next(x for x in api.get("/containers/list?all=true").json() if x["id"] == cid)
    assert summary["image_name"] == "busybox" and summary["jid"] is None
    listed = [x["id"] for x in api.get("/containers/list", params={"all": "true"}).json()]
    cid2 = create(api, image, ["/bin/true"])
    assert [x["id"] for x in api.get("/containers/list?all=true").json()][:2] == [cid2, listed[0]]
    assert api.delete(f"/containers/{cid}").json() == {"id": cid}
    r = api.delete(f"/containers/{cid}")
    assert r.status_code == 404 and r.json() == {"message": "no such container"}
    api.delete(f"/containers/{cid2}")


def test_create_errors_are_404_with_upstream_messages(api, image):
    r = api.post("/containers/create", json={"image": "nonexisting:x", "network_driver": "host"})
    assert r.status_code == 404 and r.json() == {"message": "no such image 'nonexisting:x'"}
    r = api.post("/containers/create", json={"image": image, "name": "-bad", "network_driver": "host"})
    assert r.status_code == 404 and r.json() == {"message": "-bad does not match /?[a-zA-Z0-9][a-zA-Z0-9_.-]+$"}
    r = api.post("/containers/create", json={"image": image, "network_driver": "host", "public_ports": [
        {"interfaces": [], "host_port": "80", "container_port": "80", "protocol": "tcp"}]})
    assert r.status_code == 404
    assert r.json() == {"message": "cannot publish ports of a container using the 'host' network driver"}
    r = api.post("/containers/create", json={"image": "a:b:c", "network_driver": "host"})
    assert r.status_code == 404 and "more than one ':'" in r.json()["message"]
    r = api.post("/containers/create", json={"image": image, "network_driver": "host",
                                             "jail_param": ["no.such.param=1"]})
    assert r.status_code == 404 and "unsupported jail parameter" in r.json()["message"]


def test_names_are_unique_and_prefixes_unambiguous(api, image):
    name = unique("uniq")
    cid = create(api, image, ["/bin/true"], name=name)
    r = api.post("/containers/create", json={"image": image, "name": name, "network_driver": "host"})
    assert r.status_code == 409 and name in r.json()["message"]
    others = [create(api, image, ["/bin/true"]) for _ in range(20)]
    ids = [cid, *others]
    shared = next((a[:1] for a in ids for b in ids if a != b and a[:1] == b[:1]), None)
    assert shared is not None
    r = api.get(f"/containers/{shared}/inspect")
    assert r.status_code == 409 and "ambiguous" in r.json()["message"]
    for i in ids:
        api.delete(f"/containers/{i}")


def test_detached_start_exec_and_stop(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"])
    start_detached(api, daemon, cid)
    running = [x for x in api.get("/containers/list").json() if x["id"] == cid]
    assert running and running[0]["running"] is True and isinstance(running[0]["jid"], int)
    second = exec_stream(daemon, exec_create(api, cid, ["/bin/echo", "test test"]), start_container=False)
    assert second.text == "test test\n"
    eid = second.close_reason["message"].split()[0]
    assert second.close_reason["message"] == f"{eid} has exited with exit-code 0"
    r = api.delete(f"/containers/{cid}")
    assert r.status_code == 409 and r.json() == {"message": "you cannot remove a running container"}
    t0 = time.monotonic()
    r = api.post(f"/containers/{cid}/stop")
    assert r.status_code == 200 and r.json() == {"id": cid}
    assert time.monotonic() - t0 < 5  # upstream klee's REST deadline
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["running"] is False
    r = api.post(f"/containers/{cid}/stop")
    assert r.status_code == 404 and r.json() == {"message": "container not running"}
    r = api.post("/containers/nonexisting/stop")
    assert r.status_code == 404 and r.json() == {"message": "container not found"}
    api.delete(f"/containers/{cid}")


def test_stop_kills_a_process_that_ignores_term(api, daemon, image):
    cid = create(api, image, ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    start_detached(api, daemon, cid)
    t0 = time.monotonic()
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert time.monotonic() - t0 < 5
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["exit_code"] in (137, 143)
    api.delete(f"/containers/{cid}")


def test_exec_errors(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"])
    stream = exec_stream(daemon, "wrongid")
    assert stream.frames == [] and stream.close_code == 1011
    assert stream.close_reason == {"msg_type": "error", "message": "error starting exec instance",
                                   "data": "could not find execution instance matching 'wrongid'"}
    eid = exec_create(api, cid, ["/bin/true"])
    stream = exec_stream(daemon, eid, start_container=False)
    assert stream.close_code == 1011
    assert stream.close_reason["data"] == "cannot start container when 'start_container' is false."
    first = exec_create(api, cid)
    assert exec_stream(daemon, first, attach=False).close_code == 1001
    again = exec_stream(daemon, first, attach=False)
    assert again.close_code == 1011 and again.close_reason["data"] == "executable already started"
    r = api.post("/exec/create", json={"container_id": "nonexisting"})
    assert r.status_code == 404 and r.json() == {"message": "container not found"}
    from tests.wsapi import run_stream
    bad = run_stream(daemon, "/exec/start", {"exec_id": "x", "attach": "mustbeboolean", "start_container": True})
    assert bad.close_code == 1002 and bad.close_reason["message"].startswith("invalid parameters")
    missing = run_stream(daemon, "/exec/start", {"exec_id": "x", "start_container": True})
    assert missing.close_code == 1002 and "attach" in missing.close_reason["message"]
    notjson = run_stream(daemon, "/exec/start", "{nope")
    assert notjson.close_code == 1002 and notjson.close_reason["message"].startswith("invalid json")
    api.post(f"/containers/{cid}/stop")
    api.delete(f"/containers/{cid}")


def test_exec_stop_semantics(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"])
    root_exec = exec_create(api, cid)
    assert exec_stream(daemon, root_exec, attach=False).close_code == 1001
    unstarted = exec_create(api, cid, ["/bin/true"])
    r = api.post(f"/exec/{unstarted}/stop?force_stop=false&stop_container=false")
    assert r.status_code == 404 and r.json() == {"message": "execution instance have not been started"}

    import threading
    sleeper = exec_create(api, cid, ["/bin/sleep", "99"])
    result = {}
    thread = threading.Thread(target=lambda: result.update(s=exec_stream(daemon, sleeper, start_container=False)))
    thread.start()
    deadline = time.monotonic() + 10
    while api.post(f"/exec/{sleeper}/stop?force_stop=true&stop_container=false").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    thread.join(10)
    assert result["s"].close_reason["message"] == f"{sleeper} has exited with exit-code 137"
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["running"] is True

    r = api.post(f"/exec/{root_exec}/stop?force_stop=false&stop_container=true")
    assert r.status_code == 200 and r.json() == {"id": root_exec}
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["running"] is False
    r = api.post(f"/exec/{root_exec}/stop?force_stop=false&stop_container=true")
    assert r.status_code == 404
    assert r.json() == {"message": f"could not find execution instance matching '{root_exec}'"}
    api.delete(f"/containers/{cid}")


def test_tty_allocation_and_interactive_session(api, daemon, image):
    cid = create(api, image, ["/usr/bin/tty"])
    assert exec_stream(daemon, exec_create(api, cid)).text.startswith("not a tty")
    assert exec_stream(daemon, exec_create(api, cid, tty=True)).text.startswith("/dev/pts/")
    shell = create(api, image, ["/bin/sh"])
    resize = json.dumps({"type": "resize", "rows": 33, "cols": 101})
    keys = [resize, *[bytes([b]) for b in b"stty size; pwd && exit 3\r"]]
    stream = exec_stream(daemon, exec_create(api, shell, tty=True), send=keys)
    assert "33 101" in stream.text and "/root" in stream.text
    assert stream.close_reason["message"].endswith("exited with exit-code 3")
    for c in (cid, shell):
        api.delete(f"/containers/{c}")


def test_stdin_reaches_a_non_tty_process(api, daemon, image):
    cid = create(api, image, ["/bin/sh", "-c", "read line; echo got:$line"])
    stream = exec_stream(daemon, exec_create(api, cid), send=[b"hello\n"])
    assert stream.text == "got:hello\n"
    api.delete(f"/containers/{cid}")


def test_disconnecting_client_stops_its_exec_not_the_container(api, daemon, image):
    from tests.wsapi import connect
    cid = create(api, image, ["/bin/sleep", "1000"])
    start_detached(api, daemon, cid)
    eid = exec_create(api, cid, ["/bin/sleep", "500"])
    with connect(daemon, "/exec/start") as ws:
        ws.send(json.dumps({"exec_id": eid, "attach": True, "start_container": False}))
        assert json.loads(ws.recv(timeout=10))["msg_type"] == "starting"
    deadline = time.monotonic() + 10
    while api.post(f"/exec/{eid}/stop?force_stop=true&stop_container=false").status_code == 200:
        assert time.monotonic() < deadline, "exec still known after its client left"
        time.sleep(0.05)
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["running"] is True
    api.post(f"/containers/{cid}/stop")
    api.delete(f"/containers/{cid}")


def test_env_user_and_workdir(api, daemon, image):
    _, stream = run(api, daemon, image, ["/usr/bin/env"], env=["TEST3=loool", "PATH=/bin:/usr/bin"])
    env = dict(line.split("=", 1) for line in stream.text.splitlines())
    assert env["TEST3"] == "loool" and env["HOME"] == "/root" and env["USER"] == "root"
    assert env["PWD"] == "/root" and env["PATH"] == "/bin:/usr/bin"
    _, stream = run(api, daemon, image, ["/bin/sh", "-c", "id -u; id -g; pwd"], user="user1")
    assert stream.text.split() == ["1000", "1000", "/home/user1"]
    cid = create(api, image, ["/bin/sh", "-c", "id -un; echo $X"], env=["X=container"])
    stream = exec_stream(daemon, exec_create(api, cid, user="nobody", env=["X=exec"]))
    assert stream.text.split() == ["nobody", "exec"]
    r = api.post("/exec/create", json={"container_id": cid, "env": ["novalue"]})
    assert r.status_code == 400


def test_hostname_is_the_container_name(api, daemon, image):
    name = unique("host")
    _, stream = run(api, daemon, image, ["/bin/hostname"], name=name)
    assert stream.text.strip() == name


def test_update_and_rename(api, daemon, image):
    cid = create(api, image, ["/bin/echo", "one"], env=["A=1"], name=unique("upd"))
    new = unique("renamed")
    r = api.post(f"/containers/{cid}/update", json={"mounts": [], "name": new, "public_ports": []})
    assert r.status_code == 201 and r.json() == {"id": cid}
    c = api.get(f"/containers/{new}/inspect").json()["container"]
    assert c["name"] == new and c["cmd"] == ["/bin/echo", "one"] and "A=1" in c["env"]
    r = api.post(f"/containers/{cid}/update", json={
        "container": cid, "cmd": ["/bin/echo", "two"], "env": ["B=2"], "jail_param": [], "mounts": [],
        "name": None, "persist": True, "public_ports": [], "restart_policy": "on-startup", "user": None})
    assert r.status_code == 201
    c = api.get(f"/containers/{cid}/inspect").json()["container"]
    assert c["cmd"] == ["/bin/echo", "two"] and c["env"] == ["B=2"] and c["persist"] is True
    assert c["restart_policy"] == "on-startup" and c["name"] == new
    assert exec_stream(daemon, exec_create(api, cid)).text == "two\n"
    r = api.post("/containers/nonexisting/update", json={})
    assert r.status_code == 404 and r.json() == {"message": "no such container 'nonexisting'"}
    api.post(f"/containers/{cid}/update", json={"persist": False, "restart_policy": "no"})
    api.delete(f"/containers/{cid}")


def test_prune_removes_stopped_non_persistent(api, daemon, image):
    keep = create(api, image, ["/bin/true"], persist=True)
    gone = create(api, image, ["/bin/true"])
    alive = create(api, image, ["/bin/sleep", "1000"])
    start_detached(api, daemon, alive)
    pruned = api.post("/containers/prune").json()
    assert gone in pruned and keep not in pruned and alive not in pruned
    api.post(f"/containers/{alive}/stop")
    for c in (keep, alive):
        api.delete(f"/containers/{c}")


def test_container_from_image_snapshot_reference(api, daemon, image):
    cid = create(api, image, ["/bin/true"])
    assert api.get(f"/containers/{cid}/inspect").status_code == 200
    r = api.post("/containers/create", json={"image": f"{image}@000000000abc", "network_driver": "host"})
    assert r.status_code == 404
    api.delete(f"/containers/{cid}")
