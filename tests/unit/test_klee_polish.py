"""klee's polish: `--output json` and `-q` on listings, shell completion (scripts and names from
the daemon), the notice about host paths on a remote daemon, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from click.shell_completion import get_completion_class

from klee import connection
from klee.cli import cli
from klee.commands.common import remote_daemon
from klee.session import Session
from tests.unit import test_klee_cli
from tests.unit.test_klee_cli import ROOT, FakeKleened

# the fake kleened and the CliRunner of test_klee_cli
klee, kleened, no_config_files = test_klee_cli.klee, test_klee_cli.kleened, test_klee_cli.no_config_files

CONTAINERS = [
    {"id": "abc123def456", "name": "web", "image_id": "i1", "image_name": "base", "image_tag": "latest",
     "cmd": ["/bin/sh"], "created": "2000-01-01T00:00:00Z", "running": True, "jid": None, "restart_policy": "no"},
    {"id": "fed654cba321", "name": "db", "image_id": "i1", "image_name": "base", "image_tag": "latest",
     "cmd": None, "created": "2000-01-01T00:00:00Z", "running": False, "jid": None, "restart_policy": "no"},
]  # fmt: skip
IMAGES = [
    {"id": "0a1b2c3d4e5f", "name": "base", "tag": "latest", "created": "2000-01-01T00:00:00Z"},
    {"id": "99aa88bb77cc", "name": "", "tag": "", "created": "2000-01-01T00:00:00Z"},
]
VOLUMES = [{"name": "todo-db", "created": "2000-01-01T00:00:00Z"}, {"name": "cache", "created": "x"}]
NETWORKS = [{"id": "1234abcd5678", "name": "testnet", "type": "loopback", "subnet": "10.13.37.0/24", "subnet6": ""}]


@pytest.fixture
def listings(kleened: FakeKleened) -> FakeKleened:
    kleened.on("GET", "/containers/list?all=true", 200, CONTAINERS)
    kleened.on("GET", "/containers/list?all=false", 200, CONTAINERS[:1])
    kleened.on("GET", "/images/list", 200, IMAGES)
    kleened.on("GET", "/volumes/list", 200, VOLUMES)
    kleened.on("GET", "/networks/list", 200, NETWORKS)
    return kleened


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["lsc"], ["abc123def456"]),
        (["container", "ls", "-a", "-q"], ["abc123def456", "fed654cba321"]),
        (["lsi", "--quiet"], ["0a1b2c3d4e5f", "99aa88bb77cc"]),
        (["volume", "ls", "-q"], ["todo-db", "cache"]),
        (["lsn", "-q"], ["1234abcd5678"]),
    ],
)
def test_quiet_prints_ids_only(klee, listings, args, ids):
    if "-q" not in args and "--quiet" not in args:
        args = [*args, "-q"]
    result = klee(*args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ids


@pytest.mark.parametrize(
    ("args", "data"),
    [
        (["lsc", "-a", "--output", "json"], CONTAINERS),
        (["image", "ls", "--format", "json"], IMAGES),
        (["lsv", "--output=json"], VOLUMES),
        (["network", "ls", "--output", "json"], NETWORKS),
    ],
)
def test_output_json_prints_the_daemons_objects(klee, listings, args, data):
    result = klee(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == data


def test_output_table_is_the_default_and_bad_formats_are_refused(klee, listings):
    assert klee("lsv", "--output", "table").output == klee("lsv").output
    assert klee("lsv").output.splitlines()[0].split() == ["VOLUME", "NAME", "CREATED"]
    assert klee("lsv", "--output", "yaml").exit_code != 0


@pytest.mark.parametrize("kind", ["container", "image", "volume", "network"])
def test_inspect_accepts_output_json(klee, kleened, kind):
    kleened.on("GET", f"/{kind}s/x/inspect", 200, {"kind": kind})
    assert json.loads(klee(kind, "inspect", "--output", "json", "x").output) == {"kind": kind}
    assert json.loads(klee(kind, "inspect", "--format", "json", "x").output) == {"kind": kind}


# --- shell completion -----------------------------------------------------------------------------


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o"), ("zsh", "#compdef klee"), ("fish", "complete")])
def test_completion_prints_clicks_script(klee, shell, marker):
    result = klee("completion", shell)
    assert result.exit_code == 0, result.output
    assert marker in result.output and "_KLEE_COMPLETE" in result.output
    assert klee("completion", "tcsh").exit_code != 0


@pytest.fixture
def fake_daemon(monkeypatch, listings):
    """Completion builds its own Client: give it the fake kleened as transport."""

    class FakeClient(connection.Client):
        def __init__(self, settings, transport=None, timeout=connection.TIMEOUT):
            super().__init__(settings, transport=httpx.MockTransport(listings), timeout=timeout)

    monkeypatch.setattr(connection, "Client", FakeClient)
    return listings


def complete(args: list[str], incomplete: str) -> list[str]:
    completer = get_completion_class("bash")(cli, {}, "klee", "_KLEE_COMPLETE")
    return [item.value for item in completer.get_completions(args, incomplete)]


@pytest.mark.parametrize(
    ("args", "incomplete", "expected"),
    [
        (["rmc"], "", ["web", "db"]),
        (["container", "stop"], "w", ["web"]),
        (["exec"], "fed", ["fed654cba321"]),
        (["network", "connect", "testnet"], "", ["web", "db"]),
        (["network", "connect"], "t", ["testnet"]),
        (["run", "-n"], "", ["testnet"]),
        (["run", "-d"], "b", ["base:latest"]),
        (["rmi"], "", ["base:latest", "99aa88bb77cc"]),
        (["image", "tag"], "0a", ["0a1b2c3d4e5f"]),
        (["volume", "rm", "cache"], "", ["todo-db", "cache"]),
        (["isv"], "to", ["todo-db"]),
        (["network", "create", "-t"], "b", ["bridge"]),
        (["run", "-l"], "", ["ipnet", "host", "vnet", "disabled"]),
        (["volume"], "p", ["prune"]),
    ],
)
def test_completion_offers_names_from_the_daemon(fake_daemon, args, incomplete, expected):
    assert complete(args, incomplete) == expected


def test_completion_passes_the_root_options_to_the_daemon(fake_daemon):
    assert complete(["--host", "http://127.0.0.1:1", "rmv"], "") == ["todo-db", "cache"]


def test_completion_is_silent_without_a_daemon(tmp_path):
    assert complete(["--host", f"http://{tmp_path}/none.sock", "rmc"], "") == []
    assert complete(["--host", "nonsense://", "rmc"], "") == []
    assert complete(["--config", str(tmp_path / "missing.yaml"), "rmc"], "") == []


def test_completion_through_the_shell_protocol(tmp_path):
    """What bash runs: `_KLEE_COMPLETE=bash_complete klee` with COMP_WORDS, in a fresh process."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), str(ROOT / "protocol")])}
    environ.update(
        {"_KLEE_COMPLETE": "bash_complete", "COMP_WORDS": f"klee --host http://{tmp_path}/x.sock network cr",
         "COMP_CWORD": "4", "HOME": str(tmp_path)}
    )  # fmt: skip
    code = "import sys; from klee.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=30)
    assert (result.returncode, result.stdout.split(), result.stderr) == (0, ["plain,create"], "")
    environ["COMP_WORDS"], environ["COMP_CWORD"] = f"klee --host http://{tmp_path}/x.sock rmc ", "4"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=30)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "", "")


# --- host paths and a remote daemon -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "remote"),
    [
        ("http:///var/run/kleened.sock", None),
        ("https:///var/run/kleened.tlssock", None),
        ("https://127.0.0.1:8085", None),
        ("http://[::1]:8080", None),
        ("https://localhost:8085", None),
        ("https://10.0.0.5:8085", "10.0.0.5:8085"),
        ("https://[2001:db8::1]:8085", "[2001:db8::1]:8085"),
        ("https://build.example.org:8085", "build.example.org:8085"),
    ],
)
def test_remote_daemon(host, remote):
    assert remote_daemon(Session(flags={"host": host}, environ={})) == remote


def test_bind_mount_on_a_remote_daemon_warns_on_one_line(klee, kleened):
    kleened.on("POST", "/containers/create", 201, {"id": "abc123def456"})
    result = klee("--host", "https://10.0.0.5:8085", "create", "-m", "/srv/app:/app", "-m", "data:/data", "img")
    assert result.exit_code == 0
    assert result.stdout == "abc123def456\n"
    assert result.stderr == (
        "warning: bind mount source '/srv/app' is a path on the daemon's host (10.0.0.5:8085), not on this machine\n"
    )
    local = klee("create", "-m", "/srv/app:/app", "img")
    assert local.exit_code == 0 and local.stderr == ""


# --- exit codes and errors -----------------------------------------------------------------------------


def _klee_process(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HOME": "/nonexistent"}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "client"), str(ROOT / "protocol")])
    return subprocess.run([sys.executable, "-m", "klee", *args], capture_output=True, text=True, env=environ, cwd="/")


def test_errors_are_one_line_with_exit_code_125(tmp_path):
    missing = _klee_process("--host", f"http://{tmp_path}/missing.sock", "network", "ls")
    assert (missing.returncode, len(missing.stderr.splitlines())) == (125, 1)
    unreadable = _klee_process("--host", "https://127.0.0.1:1", "--tlscacert", str(tmp_path / "nope.pem"), "lsn")
    assert unreadable.returncode == 125 and len(unreadable.stderr.splitlines()) == 1
    assert unreadable.stderr.startswith("Error! Could not load the TLS certificates")
    usage = _klee_process("network", "create", "--nat", "maybe", "x")
    assert usage.returncode == 125 and usage.stderr.startswith("Error: Invalid value for '--nat': 'maybe' is not")
    assert usage.stderr.endswith(" (see 'klee network create --help')\n") and len(usage.stderr.splitlines()) == 1
    unknown = _klee_process("volume", "nope")
    assert (unknown.returncode, unknown.stderr) == (125, "Error: No such command 'nope'. (see 'klee volume --help')\n")


def test_container_status_shows_restarting_and_health():
    from klee.commands.container import status_cell

    assert status_cell({"running": True}).text == "running"
    assert status_cell({"running": True, "health": None}).text == "running"
    assert status_cell({"running": True, "health": {"status": "unhealthy"}}).text == "running (unhealthy)"
    assert status_cell({"running": False, "restarting": True, "health": {"status": "healthy"}}).text == "restarting"
    assert status_cell({"running": False}).text == "stopped"
