"""Our klee in scripts, against a real kleened: the process's stdout and stderr apart from klee's
status lines, `build -q`, `--output json` and `-q` on every listing, the Docker shortcuts
(`ps`, `rm`, `images`, `-v`), the PORTS column, and the note when `exec` starts a stopped
container. Also the wire side: `/exec/start` multiplexes only when asked (`multiplex`), so the
upstream client keeps getting bare frames."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from tests.cli import Klee, run_klee
from tests.daemon import Daemon
from tests.rootfs import file_url, session_tarball
from tests.wsapi import exec_stream

SCRIPT = "echo to-out; echo to-err >&2; echo more-out; exit 3"


@pytest.fixture
def klee(daemon: Daemon) -> Klee:
    return lambda *args, **kw: run_klee(daemon.host, *args, **kw)


@pytest.fixture(scope="module")
def image(daemon: Daemon) -> str:
    tag = f"ksc{secrets.token_hex(3)}"
    r = run_klee(daemon.host, "image", "create", "-t", tag, "fetch", file_url(session_tarball(daemon.workdir)))
    assert r.returncode == 0, r
    return tag


@pytest.fixture
def sleeper(klee, image):
    name = f"ks{secrets.token_hex(3)}"
    r = klee("run", "-d", "--name", name, "-l", "disabled", image, "/bin/sleep", "300")
    assert r.returncode == 0 and len(r.lines) == 1, r  # `run -d`: only the container id on stdout
    yield name
    assert klee("rm", "-f", name).returncode == 0


def test_exec_keeps_the_process_streams_apart_from_klee_status(klee, sleeper):
    r = klee("exec", sleeper, "/bin/sh", "-c", SCRIPT)
    assert r.returncode == 3, r
    assert r.stdout == "to-out\nmore-out\n"
    exec_id = r.err_lines[0].split()[-1]
    assert r.err_lines == [f"created execution instance {exec_id}", "to-err", "",
                           f"{exec_id} has exited with exit-code 3"]


def test_run_output_is_only_the_process_output(klee, image):
    r = klee("run", "--rm", "-l", "disabled", image, "/bin/sh", "-c", SCRIPT)
    assert r.returncode == 3, r
    assert r.stdout == "to-out\nmore-out\n"
    assert "to-err" in r.err_lines and r.err_lines[1].startswith("created execution instance ")


def test_exec_with_a_tty_is_one_stream(klee, sleeper):
    r = klee("exec", "-t", sleeper, "/bin/sh", "-c", "echo out; echo err >&2")
    assert r.returncode == 0, r
    assert r.stdout.replace("\r\n", "\n") == "out\nerr\n"  # one terminal, both streams on it


def test_exec_starting_a_stopped_container_notes_it_once(klee, image):
    name = f"kst{secrets.token_hex(3)}"
    assert klee("create", "--name", name, "-l", "disabled", image, "/bin/true").returncode == 0
    try:
        r = klee("exec", name, "/bin/echo", "hi")
        assert r.returncode == 0 and r.stdout == "hi\n", r
        note = (f"note: container {name} was not running: exec started it with this command as its main process, "
                "so it stopped when the command ended")
        assert [line for line in r.err_lines if line.startswith("note:")] == [note]
        detached = klee("exec", "-d", name, "/bin/sleep", "0")
        assert detached.returncode == 0 and [line for line in detached.err_lines if line.startswith("note:")] == [note]
        deadline = time.monotonic() + 30
        while json.loads(klee("isc", name).stdout)["container"]["running"]:  # the sleep ends, and so does the container
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        assert klee("rm", name).returncode == 0


def test_exec_in_a_running_container_has_no_note(klee, sleeper):
    for args in (("-d",), ()):
        r = klee("exec", *args, sleeper, "/bin/true")
        assert r.returncode == 0 and not any(line.startswith("note:") for line in r.err_lines), r


def test_multiplex_is_opt_in_on_the_wire(daemon, api, sleeper):
    """Without `multiplex` the frames are what upstream klee prints; with it each names its stream."""

    def run(**kw):
        eid = api.post("/exec/create", json={"container_id": sleeper, "cmd": ["/bin/sh", "-c", SCRIPT]}).json()["id"]
        return exec_stream(daemon, eid, start_container=False, **kw)

    bare = run()
    assert sorted(bare.output.splitlines()) == [b"more-out", b"to-err", b"to-out"]
    assert bare.close_reason["message"].endswith("has exited with exit-code 3")
    tagged = run(multiplex=True)
    frames = [f for f in tagged.frames[1:] if isinstance(f, bytes)]
    assert b"".join(f[1:] for f in frames if f[:1] == b"\x01") == b"to-out\nmore-out\n"
    assert b"".join(f[1:] for f in frames if f[:1] == b"\x02") == b"to-err\n"
    assert all(f[:1] in (b"\x01", b"\x02") for f in frames)
    failed = api.post("/exec/create", json={"container_id": sleeper, "cmd": ["/nonexistent"]}).json()["id"]
    refused = exec_stream(daemon, failed, start_container=False, multiplex=True)
    assert refused.frames[1][:1] == b"\x02" and b"nonexistent" in refused.frames[1]


def test_build_quiet_prints_only_the_image_id(klee, image, tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nRUN echo building\nCMD /bin/true\n")
    tag = f"kq{secrets.token_hex(3)}"
    r = klee("build", "-q", "-t", tag, str(tmp_path))
    assert r.returncode == 0, r
    assert len(r.lines) == 1 and r.lines[0] == json.loads(klee("isi", tag).stdout)["id"]
    assert klee("rmi", tag).returncode == 0


def test_every_listing_has_json_and_quiet(klee, image, sleeper):
    volume = f"kv{secrets.token_hex(3)}"
    assert klee("volume", "create", volume).returncode == 0
    try:
        for command, key, expected in [
            (("ps",), "id", None), (("container", "ls", "-a"), "id", None), (("images",), "id", None),
            (("image", "ls"), "id", None), (("network", "ls"), "id", None), (("volume", "ls"), "name", volume),
        ]:
            listed = json.loads(klee(*command, "--output", "json").stdout)
            quiet = klee(*command, "-q")
            assert quiet.returncode == 0 and quiet.lines == [str(item[key]) for item in listed], command
            if expected is not None:
                assert expected in quiet.lines
        ps = json.loads(klee("ps", "--output", "json").stdout)
        assert sleeper in [c["name"] for c in ps]
        assert image in [i["name"] for i in json.loads(klee("images", "--output", "json").stdout)]
    finally:
        assert klee("volume", "rm", volume).returncode == 0


def test_volume_alias_and_ports_column(klee, image):
    volume = f"kv{secrets.token_hex(3)}"
    name = f"kp{secrets.token_hex(3)}"
    r = klee("create", "--name", name, "-v", f"{volume}:/data", "-l", "vnet", "-p", "18080:80", "-p", "18053:53/udp",
             image, "/bin/true")
    assert r.returncode == 0, r
    try:
        inspect = json.loads(klee("isc", name).stdout)
        assert [m["destination"] for m in inspect["container_mountpoints"]] == ["/data"]
        table = klee("ps", "-a").lines
        header, row = table[0], next(line for line in table if name in line)
        ports = row[header.index("PORTS"):].strip()
        interfaces = {i for p in inspect["container"]["public_ports"] for i in p["interfaces"]} or {"0.0.0.0"}
        assert ports == ", ".join(f"{i}:18080->80/tcp" for i in sorted(interfaces)) + ", " + \
            ", ".join(f"{i}:18053->53/udp" for i in sorted(interfaces))
    finally:
        assert klee("rm", name).returncode == 0
        assert klee("volume", "rm", volume).returncode == 0
