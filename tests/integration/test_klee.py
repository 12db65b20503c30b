"""Our klee against a real kleened: lifecycles, exit codes, `--output json`, `-q`, completion,
networks, and the same over mutual TLS (REST and the exec/image WebSockets)."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import Klee, run_klee
from tests.conftest import require_root_runtime
from tests.daemon import Daemon
from tests.rootfs import file_url, session_tarball
from tests.tls import TlsDaemon, running_tls_daemon


@pytest.fixture
def klee(daemon: Daemon) -> Klee:
    return lambda *args, **kw: run_klee(daemon.host, *args, **kw)


@pytest.fixture(scope="module")
def image(daemon: Daemon) -> str:
    tag = f"kbox{secrets.token_hex(3)}"
    r = run_klee(daemon.host, "image", "create", "-t", tag, "fetch", file_url(session_tarball(daemon.workdir)))
    assert r.returncode == 0 and r.lines[-2] == "image created", r
    return tag


def test_volume_lifecycle(klee):
    name = f"kv{secrets.token_hex(3)}"
    assert klee("volume", "create", name).lines == [name]
    assert klee("volume", "create", name).lines == [name]  # idempotent
    assert name in klee("lsv", "-q").lines
    listed = json.loads(klee("volume", "ls", "--output", "json").stdout)
    assert name in [v["name"] for v in listed]
    assert json.loads(klee("isv", name).stdout)["volume"]["name"] == name
    assert klee("rmv", name).lines == [name]
    gone = klee("rmv", name)
    assert (gone.returncode, gone.stdout, gone.stderr) == (125, "", "No such volume\n")
    assert name not in klee("lsv", "-q").lines


def test_run_exits_with_the_process_code(klee, image):
    r = klee("run", "--name", f"kr{secrets.token_hex(3)}", image, "/bin/sh", "-c", "echo out; exit 7")
    assert r.returncode == 7, r
    cid, started = r.err_lines[0], r.err_lines[1]
    exec_id = started.split()[-1]
    assert started == f"created execution instance {exec_id}" and r.lines == ["out"]
    assert r.err_lines[-1] == f"executable {exec_id} and its container exited with exit-code 7"
    assert cid in klee("lsc", "-a", "-q").lines
    assert klee("rmc", cid).lines == [cid]


def test_run_rm_removes_the_container(klee, image):
    name = f"krm{secrets.token_hex(3)}"
    r = klee("run", "--rm", "--name", name, image, "/bin/sh", "-c", "exit 3")
    assert r.returncode == 3, r
    assert r.stdout == "" and r.err_lines[0] not in klee("lsc", "-a", "-q").lines
    assert name not in [c["name"] for c in json.loads(klee("lsc", "-a", "--output", "json").stdout)]


def test_exec_exit_code_and_listing_formats(klee, image):
    name = f"kx{secrets.token_hex(3)}"
    r = klee("run", "-d", "--name", name, image, "/bin/sleep", "300")
    assert r.returncode == 0, r
    cid = r.lines[0]
    try:
        ex = klee("exec", name, "/bin/sh", "-c", "echo in-$HOSTNAME >&2; exit 4")
        assert ex.returncode == 4
        assert ex.err_lines[-1] == f"{ex.err_lines[0].split()[-1]} has exited with exit-code 4"
        assert ex.stdout == "" and any(line.startswith("in-") for line in ex.err_lines), ex
        assert klee("exec", name, "/bin/true").returncode == 0
        assert klee("exec", name, "/nonexistent").returncode != 0
        assert cid in klee("lsc", "-q").lines
        running = json.loads(klee("container", "ls", "--format", "json").stdout)
        assert [c["running"] for c in running if c["id"] == cid] == [True]
        assert json.loads(klee("isc", "--output", "json", name).stdout)["container"]["id"] == cid
        images = json.loads(klee("lsi", "--output", "json").stdout)
        assert any(i["name"] == image for i in images)
        assert klee("lsi", "-q").lines == [i["id"] for i in images]
    finally:
        assert klee("rmc", "-f", cid).lines == [cid]


def test_errors_are_one_line_on_stderr(klee):
    for args, message in [
        (["isc", "nosuchcontainer"], "container not found"),
        (["rmi", "nosuchimage"], "Error: No such image: nosuchimage"),
        (["network", "rm", "nosuchnetwork"], "network not found."),
        (["create", "nosuchimage:x"], "could not create container: no such image 'nosuchimage:x'"),
    ]:
        r = klee(*args)
        assert (r.returncode, r.stdout, r.stderr) == (125, "", message + "\n"), args


def test_prune_refuses_without_a_terminal(klee):
    r = klee("volume", "prune")
    assert r.returncode == 125 and "use --force" in r.stderr and len(r.stderr.splitlines()) == 1


def test_networks(klee, image):
    net = f"kn{secrets.token_hex(3)}"
    third = secrets.randbelow(200) + 20
    subnet = f"10.{third}.{secrets.randbelow(250)}.0/24"
    prefix = subnet.rsplit(".", 1)[0]
    network_id = klee("network", "create", "--subnet", subnet, net).lines[0]
    try:
        assert net in klee("lsn").stdout and network_id in klee("lsn", "-q").lines
        name = f"kc{secrets.token_hex(3)}"
        cid = klee("create", "--name", name, "-n", net, "--ip", f"{prefix}.9", image, "/bin/sleep", "60").lines[0]
        endpoints = json.loads(klee("isn", net).stdout)["network_endpoints"]
        assert [(e["container_id"], e["ip_address"]) for e in endpoints] == [(cid, f"{prefix}.9")]
        r = klee("network", "connect", net, name)
        assert (r.returncode, r.stderr) == (125, "container already connected to the network\n")
        assert klee("network", "disconnect", net, name).returncode == 0
        assert json.loads(klee("isn", net).stdout)["network_endpoints"] == []
        assert klee("network", "connect", "--ip", f"{prefix}.10", net, name).returncode == 0
        r = klee("run", "--rm", "-n", net, image, "/bin/sh", "-c", f"ip -4 addr | grep -q '{prefix}\\.' && exit 5")
        assert r.returncode == 5, r
        assert klee("rmc", name).lines == [cid]
    finally:
        klee("rmn", net)
    assert net not in klee("lsn").stdout


def test_completion_against_the_daemon(daemon, klee, image):
    name = f"kcomp{secrets.token_hex(3)}"
    assert klee("volume", "create", name).returncode == 0
    try:
        env = {"_KLEE_COMPLETE": "bash_complete", "COMP_WORDS": f"klee --host {daemon.host} rmv kcomp",
               "COMP_CWORD": "4"}  # fmt: skip
        r = run_klee(daemon.host, env=env)
        assert r.returncode == 0 and f"plain,{name}" in r.lines, r
        env["COMP_WORDS"] = f"klee --host {daemon.host} run {image[:4]}"
        assert f"plain,{image}:latest" in run_klee(daemon.host, env=env).lines
    finally:
        klee("rmv", name)


# --- over mutual TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsDaemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-ktls-") as tmp, running_tls_daemon(Path(tmp)) as d:
        yield d


@pytest.fixture(scope="module")
def mtls(tls: TlsDaemon) -> Klee:
    c = tls.certs
    flags = ["--tlsverify", "--tlscacert", str(c.ca), "--tlscert", str(c.client_cert), "--tlskey", str(c.client_key)]
    return lambda *args, **kw: run_klee(tls.mtls_host, *args, flags=flags, **kw)


def test_mtls_volumes_images_and_exec(tls, mtls):
    name = f"kt{secrets.token_hex(3)}"
    assert mtls("volume", "create", name).lines == [name]
    assert name in mtls("lsv", "-q").lines
    tag = f"ktls{secrets.token_hex(3)}"
    created = mtls("image", "create", "-t", tag, "fetch", file_url(session_tarball(tls.daemon.workdir)))
    assert created.returncode == 0 and created.lines[-2] == "image created", created  # the /images/create WebSocket
    r = mtls("run", "--rm", "-m", f"{name}:/data", tag, "/bin/sh", "-c", "echo over-tls > /data/f; exit 6")
    assert r.returncode == 6 and r.stdout == "", r  # the /exec/start WebSocket
    assert not any("warning" in line for line in r.err_lines), r  # 127.0.0.1 is not remote
    cid = mtls("run", "-d", tag, "/bin/sleep", "120").lines[0]
    try:
        ex = mtls("exec", cid, "/bin/sh", "-c", "echo exec-over-tls")
        assert ex.returncode == 0 and ex.lines == ["exec-over-tls"], ex
        assert mtls("exec", cid, "/bin/sh", "-c", "exit 9").returncode == 9
    finally:
        assert mtls("rmc", "-f", cid).lines == [cid]
    assert mtls("rmv", name).lines == [name]


def test_mtls_without_a_client_certificate_is_one_line(tls):
    r = run_klee(tls.mtls_host, "lsv", flags=["--tlscacert", str(tls.certs.ca)])
    assert r.returncode == 125 and len(r.stderr.splitlines()) == 1
    assert "certificate required" in r.stderr


def test_mtls_build_upload_logs_attach_and_events(tls, mtls, tmp_path):
    """Every WebSocket command works against a remote daemon over mutual TLS; the build context
    is uploaded (the daemon cannot read a path on the client's machine)."""
    since = str(time.time())
    tag = f"kb{secrets.token_hex(3)}"
    assert mtls("image", "create", "-t", tag, "fetch", file_url(session_tarball(tls.daemon.workdir))).returncode == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("uploaded\n")
    (ctx / "Dockerfile").write_text(f"FROM {tag}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n")
    built = mtls("build", "-t", f"{tag}-built", str(ctx))
    assert built.returncode == 0 and "uploaded" in built.lines and "image created" in built.lines, built
    cid = mtls("run", "-d", f"{tag}-built", "/bin/sh", "-c", "cat /hello.txt; read x; echo got $x; exit 4").lines[0]
    deadline = time.monotonic() + 10
    while "uploaded" not in mtls("logs", cid).stdout:
        assert time.monotonic() < deadline, "the container's output never reached its log"
        time.sleep(0.1)
    attached = mtls("attach", cid, input="hi\n")
    assert attached.stdout == "got hi\n" and attached.returncode == 4, attached
    assert mtls("logs", cid).lines == ["uploaded", "got hi"]
    events = mtls("events", "--since", since, "--until", "0s", "--filter", f"object={cid}")
    actions = [line.split()[2] for line in events.lines if line.split()[1] == "container"]
    assert [a for a in actions if a in ("create", "start", "die")] == ["create", "start", "die"], events
    assert "attach" in actions
    assert mtls("rmc", cid).lines == [cid]
