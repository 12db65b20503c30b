"""Upstream klee's image and container commands against our daemon, with upstream's outputs.

Linux differs from FreeBSD where the tests say so: the image's default command is `/bin/sh`
(not `/bin/sh /etc/rc`), and process listings show tini as PID 1.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.rootfs import file_url, session_tarball


@pytest.fixture(scope="module")
def busybox(daemon) -> str:
    from tests.compat.conftest import run_upstream

    tag = f"cbox{secrets.token_hex(3)}"
    r = run_upstream(daemon.host, "image", "create", "-t", tag, "fetch", file_url(session_tarball(daemon.workdir)))
    assert r.returncode == 0, r
    assert "Succesfully fetched base system." in r.stdout and "image created" in r.stdout
    return tag


def test_image_create_ls_inspect_rm(klee, daemon):
    tag = f"ci{secrets.token_hex(3)}"
    r = klee("image", "create", "-t", f"{tag}:v1", "fetch", file_url(session_tarball(daemon.workdir)))
    assert r.returncode == 0 and r.lines[-2] == "image created"
    image_id = r.lines[-1]
    ls = klee("image", "ls")
    assert ls.lines[0].split() == ["ID", "NAME", "TAG", "CREATED"]
    assert any(line.split()[:3] == [image_id, tag, "v1"] for line in ls.lines)
    inspect = json.loads(klee("image", "inspect", f"{tag}:v1").stdout)
    assert inspect["id"] == image_id and inspect["instructions"] == [] and inspect["user"] == "root"
    assert inspect["cmd"] == ["/bin/sh"]  # Linux default (upstream FreeBSD: /bin/sh /etc/rc)
    assert klee("image", "tag", image_id, f"{tag}:v2").lines == [image_id]
    assert klee("rmi", f"{tag}:v2").lines == [f"{tag}:v2"]
    assert klee("rmi", f"{tag}:v2").stdout == f"Error: No such image: {tag}:v2\n\n"  # upstream adds a newline


def test_run_prints_output_and_the_closing_message(klee, busybox):
    r = klee("run", "--name", f"r{secrets.token_hex(3)}", busybox, "/bin/echo", "hi", "there")
    assert r.returncode == 0
    assert r.lines[0] and r.lines[1].startswith("created execution instance ")
    exec_id = r.lines[1].split()[-1]
    assert r.lines[2] == "hi there"
    assert r.lines[-1] == f"executable {exec_id} and its container exited with exit-code 0"


def test_create_start_exec_stop_rm(klee, busybox):
    name = f"web{secrets.token_hex(3)}"
    r = klee("create", "--name", name, busybox, "/bin/sleep", "100")
    assert r.returncode == 0
    cid = r.lines[0]
    r = klee("start", "-d", name)
    assert r.returncode == 0 and r.lines[0].startswith("created execution instance ")
    ls = klee("lsc")
    assert ls.lines[0].split()[:2] == ["CONTAINER", "ID"]
    row = next(line for line in ls.lines if cid in line)
    assert "running" in row and name in row
    r = klee("exec", name, "/bin/sh", "-c", "echo inside; exit 3")
    assert "inside" in r.lines
    exec_id = r.lines[0].split()[-1]
    assert r.lines[-1] == f"{exec_id} has exited with exit-code 3"
    inspect = json.loads(klee("isc", name).stdout)
    assert inspect["container"]["running"] is True and inspect["container"]["id"] == cid
    assert klee("rmc", name).lines == ["you cannot remove a running container"]
    assert klee("stop", name).lines == [cid]
    assert klee("stop", name).lines == ["container not running"]
    assert cid not in klee("lsc").stdout
    assert cid in klee("container", "ls", "-a").stdout
    assert klee("rmc", name).lines == [cid]
    assert klee("rmc", name).lines == ["no such container"]


def test_rm_force_and_restart(klee, busybox):
    name = f"rs{secrets.token_hex(3)}"
    klee("create", "--name", name, busybox, "/bin/sleep", "100")
    assert klee("restart", name).lines == ["container not running"]  # upstream: restart needs it running
    klee("start", "-d", name)
    r = klee("restart", name)
    assert r.lines[1].startswith("created execution instance ")
    assert json.loads(klee("isc", name).stdout)["container"]["running"] is True
    assert klee("rmc", "-f", name).returncode == 0
    assert klee("isc", name).lines == ["container not found"]


def test_update_rename_and_prune(klee, busybox):
    name = f"up{secrets.token_hex(3)}"
    cid = klee("create", "--name", name, "-e", "A=1", busybox, "/bin/echo", "x").lines[0]
    new = f"{name}b"
    assert klee("container", "rename", name, new).lines == [cid]
    c = json.loads(klee("isc", new).stdout)["container"]
    assert c["cmd"] == ["/bin/echo", "x"] and "A=1" in c["env"]  # rename keeps the rest
    assert klee("container", "update", "-e", "B=2", new, "/bin/echo", "y").lines == [cid]
    c = json.loads(klee("isc", new).stdout)["container"]
    assert c["env"] == ["B=2"] and c["cmd"] == ["/bin/echo", "y"]
    r = klee("container", "prune", "-f")
    assert cid in r.lines


def test_create_errors(klee, busybox):
    r = klee("create", "nonexisting:image")
    assert r.lines == ["could not create container: no such image 'nonexisting:image'"]
    r = klee("create", "--name", "-x", busybox)
    assert "does not match" in r.stdout + r.stderr


def test_image_prune(tmp_path):
    """On a daemon of its own: prune without -a takes untagged images, with -a every unused one."""
    from tests.compat.conftest import run_upstream
    from tests.conftest import require_root_runtime
    from tests.daemon import running_daemon

    require_root_runtime()
    with running_daemon(tmp_path / "d") as own:
        url = file_url(session_tarball(own.workdir))
        tagged = run_upstream(own.host, "image", "create", "-t", "keep", "fetch", url).lines[-1]
        untagged = run_upstream(own.host, "image", "create", "fetch", url).lines[-1]
        used = run_upstream(own.host, "image", "create", "-t", "used", "fetch", url).lines[-1]
        cid = run_upstream(own.host, "create", "used").lines[0]
        r = run_upstream(own.host, "image", "prune", "-f")
        assert r.returncode == 0 and r.lines == [untagged]
        r = run_upstream(own.host, "image", "prune", "-a", "-f")
        assert r.lines == [tagged]
        assert [line.split()[0] for line in run_upstream(own.host, "lsi").lines[2:] if line.strip()] == [used]
        run_upstream(own.host, "rmc", cid)
        assert run_upstream(own.host, "image", "prune", "-a", "-f").lines == [used]


def test_containers_with_our_restart_policies_list_and_inspect_in_upstream_klee(klee, busybox, api):
    """A policy upstream does not know shows as upstream's nearest value (AUTORUN yes when it starts
    with the daemon), never a value upstream klee's enum refuses."""
    made = {}
    for policy in ("always", "unless-stopped", "on-failure:2"):
        r = api.post("/containers/create", json={"image": busybox, "cmd": ["/bin/true"], "restart_policy": policy})
        assert r.status_code == 201, r.text
        made[policy] = r.json()["id"]
    ls = klee("container", "ls", "-a")
    assert ls.returncode == 0, ls
    for policy, cid in made.items():
        row = next(line for line in ls.lines if cid in line)
        assert ("yes" if policy != "on-failure:2" else "no") in row.split(), row
        shown = json.loads(klee("isc", cid).stdout)["container"]
        assert shown["restart_policy"] == ("no" if policy == "on-failure:2" else "on-startup")
        assert klee("rmc", cid).lines == [cid]
