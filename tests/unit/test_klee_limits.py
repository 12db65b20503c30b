"""klee's limit and isolation flags (bodies sent, errors before any request), and the stats and
top output."""

from __future__ import annotations

import json

import httpx
import pytest
from click.testing import CliRunner

from klee import config
from klee.cli import cli
from klee.commands.stats import binary_size, decimal_size, stats_row
from klee.errors import KleeError, UsageError
from klee.limits import parse_security_opt, parse_size, parse_ulimit
from klee.session import Session
from tests.unit.test_klee_cli import FakeKleened


@pytest.fixture(autouse=True)
def no_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path / "etc-klee.yaml"))


def invoke(kleened: FakeKleened, *args: str):
    session = Session(environ={}, transport=httpx.MockTransport(kleened))
    return CliRunner().invoke(cli, list(args), obj=session)


@pytest.mark.parametrize(("text", "size"), [("1024", 1024), ("512m", 512 << 20), ("1g", 1 << 30), ("64MB", 64 << 20),
                                            ("1.5k", 1536), ("10b", 10)])
def test_sizes_are_dockers(text, size):
    assert parse_size(text, "--memory") == size


def test_size_errors_and_unlimited_swap():
    assert parse_size("-1", "--memory-swap") == -1
    for text in ("-1", "lots", "1x", ""):
        with pytest.raises(UsageError, match="invalid --memory"):
            parse_size(text, "--memory")


def test_ulimits():
    assert parse_ulimit("nofile=1024:2048") == {"name": "nofile", "soft": 1024, "hard": 2048}
    assert parse_ulimit("nproc=50") == {"name": "nproc", "soft": 50, "hard": 50}
    for text in ("core=1", "nofile", "nofile=a:b", "nofile=1:"):
        with pytest.raises(UsageError, match="invalid --ulimit"):
            parse_ulimit(text)


def test_security_opt_reads_the_profile_here(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert parse_security_opt(()) is None
    assert parse_security_opt(("seccomp=unconfined",)) == "unconfined"
    assert parse_security_opt((f"seccomp={profile}",)) == '{"defaultAction": "SCMP_ACT_ALLOW"}'
    with pytest.raises(UsageError, match="unsupported --security-opt 'apparmor=x'"):
        parse_security_opt(("apparmor=x",))
    with pytest.raises(UsageError, match="cannot read the seccomp profile"):
        parse_security_opt((f"seccomp={tmp_path}/missing.json",))


def test_run_sends_the_fields_only_when_given():
    kleened = FakeKleened().on("POST", "/containers/create", 201, {"id": "abc123def456"})
    result = invoke(kleened, "create", "--memory", "64m", "--memory-swap", "-1", "--cpus", "1.5", "--cpu-shares", "512",
                    "--pids-limit", "100", "--ulimit", "nofile=10:20", "--security-opt", "seccomp=unconfined",
                    "--userns", "host", "-m", "vol:/data", "img")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = kleened.requests[0][2]
    assert body["resources"] == {"memory": 64 << 20, "memory_swap": -1, "cpus": 1.5, "cpu_shares": 512,
                                 "pids_limit": 100, "ulimits": [{"name": "nofile", "soft": 10, "hard": 20}]}
    assert (body["seccomp"], body["userns"]) == ("unconfined", "host")
    assert body["mounts"][0]["source"] == "vol"  # -m stays upstream's --mount
    invoke(kleened, "create", "img")
    assert not {"resources", "seccomp", "userns"} & set(kleened.requests[1][2])


def test_update_sends_limits_and_bad_flags_send_nothing():
    kleened = FakeKleened().on("POST", "/containers/c1/update", 201, {"id": "c1"})
    assert invoke(kleened, "container", "update", "--memory", "0", "--pids-limit", "-1", "c1").exit_code == 0
    assert kleened.requests[0][2]["resources"] == {"memory": 0, "pids_limit": -1}
    result = invoke(kleened, "container", "update", "--memory", "huge", "c1")
    assert isinstance(result.exception, KleeError) and "invalid --memory 'huge'" in result.exception.message
    assert len(kleened.requests) == 1


def test_sizes_in_tables():
    assert (binary_size(512), binary_size(1536), binary_size(64 << 20)) == ("512B", "1.50KiB", "64.00MiB")
    assert (decimal_size(999), decimal_size(1500), decimal_size(2_500_000)) == ("999B", "1.5kB", "2.5MB")


def test_stats_rows():
    row = stats_row({"id": "abc", "name": "web", "cpu_percent": 12.345, "memory": 32 << 20, "memory_limit": 64 << 20,
                     "pids": 3, "net_rx": 1000, "net_tx": 2000, "block_read": 0, "block_write": 4096})
    assert row == ["abc", "web", "12.35%", "32.00MiB / 64.00MiB", "50.00%", "1kB / 2kB", "0B / 4.1kB", "3"]
    row = stats_row({"id": "abc", "name": None, "cpu_percent": 0, "memory": 10, "memory_limit": None, "pids": 1,
                     "net_rx": None, "net_tx": None, "block_read": 0, "block_write": 0})
    assert row[1] == "--" and row[3] == "10B / --" and row[4] == "--" and row[5] == "--"


def test_top_table_and_json():
    process = {"pid": 10, "ppid": 1, "uid": 0, "host_uid": 100000, "user": "root", "state": "S", "cpu_time": 3725.5,
               "rss": 2 << 20, "started": "2000-01-01T00:00:00Z", "command": "/bin/sleep 100"}
    kleened = FakeKleened().on("GET", "/containers/web/top", 200, {"id": "abc", "processes": [process]})
    lines = invoke(kleened, "top", "web").output.splitlines()
    assert lines[0].split() == ["USER", "PID", "PPID", "STATE", "RSS", "TIME", "STARTED", "COMMAND"]
    assert lines[1].split()[:6] == ["root", "10", "1", "S", "2.00MiB", "01:02:05"]
    assert lines[1].endswith("/bin/sleep 100")
    assert json.loads(invoke(kleened, "top", "--output", "json", "web").output) == [process]
