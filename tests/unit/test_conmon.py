"""conmon's command line and control lines, and the shape of the log records it writes (pure)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from kleened.platform.linux.attachsock import REOPEN_LOG_COMMAND, resize_command
from kleened.platform.linux.monitorspec import MonitorOptions, MonitorPaths, conmon_argv

# A CRI log record as conmon writes it: RFC 3339 stamp with nanoseconds and a zone, stream, tag.
CRI_RECORD = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) (stdout|stderr) [FP] .*", re.S)

PATHS = MonitorPaths(bundle=Path("/s/bundles/c1"), attach_link=Path("/s/attach/c1"))


def _options(**kw) -> MonitorOptions:
    return MonitorOptions(log_path=Path("/s/logs/c1/live.log"), log_size_max=1024, **kw)


def _pairs(argv: list[str]) -> dict[str, str]:
    return {a: b for a, b in itertools.pairwise(argv) if a.startswith("--")}


def test_argv_names_everything_by_the_bundle_and_id() -> None:
    argv = conmon_argv("/usr/bin/conmon", "/usr/sbin/runc", Path("/s/runc"), "c1", PATHS, _options())
    assert argv[0] == "/usr/bin/conmon"
    pairs = _pairs(argv)
    assert pairs["--cid"] == pairs["--cuuid"] == "c1"
    assert pairs["--bundle"] == pairs["--persist-dir"] == "/s/bundles/c1"
    assert pairs["--runtime"] == "/usr/sbin/runc"
    assert pairs["--container-pidfile"] == "/s/bundles/c1/init.pid"
    assert pairs["--conmon-pidfile"] == "/s/bundles/c1/conmon.pid"
    assert pairs["--socket-dir-path"] == "/s/attach"  # conmon links /s/attach/c1 -> the bundle
    assert pairs["--log-path"] == "k8s-file:/s/logs/c1/live.log"
    assert pairs["--log-size-max"] == "1024"
    runtime_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--runtime-arg"]
    assert runtime_args == ["--root", "/s/runc", "--log", "/s/bundles/c1/runc.log", "--log-format", "json"]
    assert "--stdin" in argv and "--leave-stdin-open" in argv and "--terminal" not in argv


def test_argv_tty_and_stdin_once() -> None:
    argv = conmon_argv("conmon", "runc", Path("/s/runc"), "c1", PATHS, _options(tty=True, stdin_once=True))
    assert "--terminal" in argv and "--leave-stdin-open" not in argv


def test_options_round_trip() -> None:
    options = _options(tty=True)
    assert MonitorOptions.from_json(options.to_json()) == options


def test_paths() -> None:
    assert PATHS.attach == Path("/s/attach/c1/attach")
    assert (PATHS.ctl, PATHS.exit_file, PATHS.oom_file) == (Path("/s/bundles/c1/ctl"), Path("/s/bundles/c1/exit"),
                                                           Path("/s/bundles/c1/oom"))


def test_control_lines() -> None:
    assert resize_command(40, 132) == b"1 40 132\n"
    assert resize_command(5000, -3) == b"1 1000 0\n"  # conmon refuses the line otherwise
    assert REOPEN_LOG_COMMAND == b"2 0 0\n"


def test_cri_record_grammar() -> None:
    assert CRI_RECORD.fullmatch(b"2024-05-01T12:00:00.123456789+00:00 stdout F a full line")
    assert CRI_RECORD.fullmatch(b"2024-05-01T12:00:00.123456789Z stderr P part")
    assert not CRI_RECORD.fullmatch(b"2024-05-01T12:00:00Z stdout F no nanoseconds")
