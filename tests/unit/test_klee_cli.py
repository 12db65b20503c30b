"""klee's commands against a fake kleened (httpx.MockTransport): requests sent, output printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from klee import config
from klee.cli import SHORTCUTS, cli
from klee.errors import KleeError
from klee.session import Session

ROOT = Path(__file__).resolve().parents[2]


class FakeKleened:
    """Answers REST requests from a table and records them as (method, path?query, json body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}

    def on(self, method: str, path: str, status: int, body: Any = None) -> FakeKleened:
        self.routes[(method, path)] = (status, body)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        status, reply = self.routes.get((request.method, path), (404, {"message": "no route"}))
        if reply is None:
            return httpx.Response(status)
        return httpx.Response(status, json=reply)


@pytest.fixture(autouse=True)
def no_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path / "etc-klee.yaml"))


@pytest.fixture
def kleened() -> FakeKleened:
    return FakeKleened()


@pytest.fixture
def klee(kleened) -> Callable[..., Any]:
    def invoke(*args: str, input: str | None = None) -> Any:
        session = Session(environ={}, transport=httpx.MockTransport(kleened))
        return CliRunner().invoke(cli, list(args), obj=session, input=input)

    return invoke


def test_volume_ls_plain(klee, kleened):
    kleened.on("GET", "/volumes/list", 200, [{"name": "todo-db", "created": "2000-01-01T00:00:00Z"}])
    result = klee("volume", "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["VOLUME", "NAME", "CREATED"]
    assert lines[1].startswith("todo-db") and lines[1].endswith("years ago")


def test_volume_create_inspect_and_shortcuts(klee, kleened):
    kleened.on("POST", "/volumes/create", 201, {"id": "myvol"})
    kleened.on("GET", "/volumes/myvol/inspect", 200, {"volume": {"name": "myvol"}, "mountpoints": []})
    assert klee("volume", "create", "myvol").output == "myvol\n"
    result = klee("isv", "myvol")
    assert json.loads(result.output) == {"volume": {"name": "myvol"}, "mountpoints": []}
    assert kleened.requests == [
        ("POST", "/volumes/create", {"name": "myvol"}),
        ("GET", "/volumes/myvol/inspect", None),
    ]


def test_rm_stops_at_the_first_failure(klee, kleened):
    kleened.on("DELETE", "/volumes/a", 200, {"id": "a"}).on("DELETE", "/volumes/b", 404, {"message": "No such volume"})
    result = klee("rmv", "a", "b", "c")
    assert result.output == "a\n"
    assert isinstance(result.exception, KleeError) and result.exception.message == "No such volume"
    assert [path for _, path, _ in kleened.requests] == ["/volumes/a", "/volumes/b"]


def test_prune_needs_force_without_a_terminal(klee, kleened):
    kleened.on("POST", "/volumes/prune", 200, ["v1", "v2"])
    refused = klee("volume", "prune")
    assert isinstance(refused.exception, KleeError) and "--force" in refused.exception.message
    assert kleened.requests == []
    assert klee("volume", "prune", "-f").output == "v1\nv2\n"


def test_container_ls_all(klee, kleened):
    containers = [
        {
            "id": "abc123def456",
            "name": "web",
            "image_id": "i1",
            "image_name": "FreeBSD",
            "image_tag": "13.2",
            "cmd": ["/bin/sh", "/etc/rc"],
            "created": "2000-01-01T00:00:00Z",
            "running": True,
            "jid": 7,
            "restart_policy": "on-startup",
            "public_ports": [
                {"interfaces": [], "host_port": "8080", "container_port": "80", "protocol": "tcp"},
                {"interfaces": ["em0"], "host_port": "5000:5010", "container_port": "5000:*", "protocol": "udp"},
            ],
        },
        {
            "id": "fed654cba321",
            "name": None,
            "image_id": "0a1b2c3d4e5f",
            "image_name": "",
            "image_tag": "",
            "cmd": None,
            "created": "2000-01-01T00:00:00Z",
            "running": False,
            "jid": None,
            "restart_policy": "no",
        },
    ]
    kleened.on("GET", "/containers/list?all=true", 200, containers)
    result = klee("lsc", "-a")
    assert result.exit_code == 0, result.output
    header, first, second = result.output.splitlines()
    assert header.split() == [
        "CONTAINER", "ID", "NAME", "IMAGE", "COMMAND", "CREATED", "AUTORUN", "STATUS", "JID", "PORTS"
    ]
    assert first.split()[:5] == ["abc123def456", "web", "FreeBSD:13.2", "/bin/sh", "/etc/rc"]
    assert first.split()[-5:] == ["yes", "running", "7", "0.0.0.0:8080->80/tcp,", "em0:5000-5010->5000/udp"]
    assert second.split()[:3] == ["fed654cba321", "0a1b2c3d4e5f", "Dockerfile"]
    assert second.split()[-2:] == ["no", "stopped"]


def test_container_create_body_as_upstream(klee, kleened):
    kleened.on("POST", "/containers/create", 201, {"id": "abc123def456"})
    result = klee(
        "container", "create", "--name", "web", "-e", "A=1", "-m", "myvol:/mnt", "-m", "/tmp:/hosttmp:ro",
        "-J", "allow.raw_sockets=true", "-p", "8080:8000", "-p", "em0:9000:9000/udp",
        "FreeBSD:latest", "/bin/sh", "-c", "echo hi", "-e", "x",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "abc123def456\n"
    assert kleened.requests == [("POST", "/containers/create", {
        "name": "web", "image": "FreeBSD:latest", "cmd": ["/bin/sh", "-c", "echo hi", "-e", "x"], "user": "",
        "env": ["A=1"], "jail_param": ["allow.raw_sockets=true"], "persist": False, "restart_policy": "no",
        "network_driver": "host",
        "mounts": [{"type": "volume", "source": "myvol", "destination": "/mnt", "read_only": False},
                   {"type": "nullfs", "source": "/tmp", "destination": "/hosttmp", "read_only": True}],
        "public_ports": [{"interfaces": [], "host_port": "8080", "container_port": "8000", "protocol": "tcp"},
                         {"interfaces": ["em0"], "host_port": "9000", "container_port": "9000", "protocol": "udp"}],
    })]  # fmt: skip


def test_create_with_network_then_connect(klee, kleened):
    kleened.on("POST", "/containers/create", 201, {"id": "abc123def456"})
    kleened.on("POST", "/networks/connect", 204)
    result = klee("create", "-n", "testnet", "--ip", "10.13.37.5", "FreeBSD")
    assert result.exit_code == 0, result.output
    create, connect = kleened.requests
    assert create[2]["network_driver"] == "ipnet" and create[2]["name"]  # a generated name
    assert connect == ("POST", "/networks/connect", {
        "container": "abc123def456", "network": "testnet", "ip_address": "10.13.37.5", "ip_address6": "<auto>",
    })  # fmt: skip


def test_create_errors(klee, kleened):
    kleened.on("POST", "/containers/create", 404, {"message": "no such image 'nope'"})
    result = klee("create", "nope")
    assert result.exception.message == "could not create container: no such image 'nope'"
    kleened.on("POST", "/containers/create", 201, {"id": "abc123def456"})
    kleened.on("POST", "/networks/connect", 404, {"message": "network not found"})
    result = klee("create", "-n", "nonet", "FreeBSD")
    assert result.output == "abc123def456\n"  # kept, as upstream
    assert result.exception.message == "could not connect container: network not found"


def test_invalid_options_fail_before_any_request(klee, kleened):
    for args in (["-l", "lolnet"], ["--restart", "sometimes"], ["--restart", "always:2"], ["-m", "nocolon"],
                 ["-p", "80/sctp"], ["--rm", "--restart", "always"], ["--health-interval", "soon"]):
        result = klee("run", *args, "FreeBSD")
        assert isinstance(result.exception, KleeError), args
    assert "'lolnet' is not a valid network driver" in klee("run", "-l", "lolnet", "FreeBSD").exception.message
    assert kleened.requests == []


def test_rm_force_stops_first(klee, kleened):
    kleened.on("POST", "/containers/abc/stop", 404, {"message": "container not running"})
    kleened.on("DELETE", "/containers/abc", 200, {"id": "abc123def456"})
    result = klee("rmc", "-f", "abc")
    assert result.output == "abc123def456\n"
    assert [(m, p) for m, p, _ in kleened.requests] == [("POST", "/containers/abc/stop"), ("DELETE", "/containers/abc")]


def test_update_sends_null_for_what_is_kept(klee, kleened):
    kleened.on("POST", "/containers/abc/update", 201, {"id": "abc123def456"})
    klee("container", "update", "-e", "X=2", "--restart", "on-startup", "abc", "/bin/ls")
    klee("container", "update", "--no-persist", "abc")
    klee("container", "rename", "abc", "newname")
    bodies = [body for _, _, body in kleened.requests]
    assert bodies == [
        {"name": None, "user": None, "env": ["X=2"], "jail_param": None, "cmd": ["/bin/ls"], "persist": None,
         "restart_policy": "on-startup"},
        {"name": None, "user": None, "env": None, "jail_param": None, "cmd": None, "persist": False,
         "restart_policy": None},
        {"name": "newname", "user": None, "env": None, "jail_param": None, "cmd": None, "persist": None,
         "restart_policy": None},
    ]  # fmt: skip


def test_image_commands(klee, kleened):
    kleened.on("POST", "/images/FreeBSD:13.2/tag?nametag=new%3Atag", 200, {"id": "0a1b2c3d4e5f"})
    kleened.on("POST", "/images/prune?all=true", 200, ["0a1b2c3d4e5f"])
    kleened.on("GET", "/images/list", 200, [{"id": "0a1b2c3d4e5f", "name": "FreeBSD", "tag": "13.2", "created": "x"}])
    assert klee("image", "tag", "FreeBSD:13.2", "new:tag").output == "0a1b2c3d4e5f\n"
    assert klee("image", "prune", "-a", "-f").output == "0a1b2c3d4e5f\n"
    assert klee("lsi").output.splitlines() == [
        "ID             NAME      TAG    CREATED",
        "0a1b2c3d4e5f   FreeBSD   13.2   x",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch"], "The SOURCE argument is needed when creating images using the 'fetch' method."),
        (["zfs-copy", "a", "b"], "too many arguments: b"),
        (["fetch-auto", "extra"], "too many arguments: extra"),
    ],
)
def test_image_create_argument_errors(klee, kleened, args, message):
    assert klee("image", "create", *args).exception.message == message


def test_version(klee, kleened):
    runtimes = [{"name": "runc", "version": "1.2.0"}]
    reply = {"version": "0.1.0", "api_version": "0.1.1", "platform": "linux", "python": "3.11.7", "runtimes": runtimes}
    kleened.on("GET", "/version", 200, reply)
    result = klee("version")
    assert result.exit_code == 0, result.output
    assert " Runtimes:     runc 1.2.0" in result.output.splitlines()
    kleened.on("GET", "/version", 404, {"message": "not found"})
    result = klee("version")
    assert result.output.startswith("Client:\n")
    assert "does not report its version" in result.exception.message


def test_every_shortcut_resolves():
    ctx = cli.make_context("klee", ["--help"], resilient_parsing=True)
    for shortcut, (group, name) in SHORTCUTS.items():
        target = cli.get_command(ctx, group).get_command(ctx, name)
        assert cli.get_command(ctx, shortcut) is target is not None


def _run_klee(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HOME": "/nonexistent", **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "client"), str(ROOT / "protocol")])
    return subprocess.run([sys.executable, "-m", "klee", *args], capture_output=True, text=True, env=environ, cwd="/")


def test_main_reports_errors_on_stderr_with_125(tmp_path):
    result = _run_klee("--host", f"http://{tmp_path}/missing.sock", "volume", "ls")
    assert result.returncode == 125
    assert result.stdout == ""
    assert result.stderr.startswith("unable to connect to kleened: ")
    bad_host = _run_klee("--host", "http:///x.sock?q=1", "lsv")
    assert (bad_host.returncode, bad_host.stderr) == (125, "Could not parse the '--host' parameter\n")


def test_help_and_version_import_no_heavy_module():
    code = (
        "import sys; from klee.cli import main; rc = main(sys.argv[1:]);"
        "heavy = [m for m in ('httpx', 'websockets', 'rich', 'yaml', 'msgspec') if sys.modules.get(m)];"
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)"
    )
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), str(ROOT / "protocol")])}
    for args in (["--help"], ["--version"], ["volume", "--help"], ["run", "--help"]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ)
        assert result.returncode == 0, result.stderr
        assert "HEAVY []" in result.stderr, (args, result.stderr)


def test_request_bodies_match_the_protocol_structs(klee, kleened):
    """Every body klee sends decodes as the kleene_protocol Struct of its endpoint, with no unknown key."""
    import msgspec

    from kleene_protocol import models

    kleened.on("POST", "/containers/create", 201, {"id": "abc123def456"}).on("POST", "/networks/connect", 204)
    kleened.on("POST", "/containers/abc/update", 201, {"id": "abc123def456"})
    kleened.on("POST", "/volumes/create", 201, {"id": "v"})
    klee(
        "create", "-n", "net", "-p", "80", "-m", "v:/d:ro", "-J", "allow.raw_sockets", "--restart", "on-startup", "img"
    )
    klee("container", "update", "--name", "n", "-u", "www", "-e", "A=1", "-J", "x", "-P", "abc", "/bin/ls")
    klee("container", "rename", "abc", "new")
    klee("volume", "create", "v")
    structs = {
        "/containers/create": models.ContainerConfig,
        "/networks/connect": models.EndPointConfig,
        "/containers/abc/update": models.ContainerUpdate,
        "/volumes/create": models.VolumeConfig,
    }
    assert {path for _, path, _ in kleened.requests} == set(structs)
    for _, path, body in kleened.requests:
        struct = structs[path]
        assert set(body) <= set(struct.__struct_fields__), path
        msgspec.convert(body, struct)  # raises on a wrong type or enum value
