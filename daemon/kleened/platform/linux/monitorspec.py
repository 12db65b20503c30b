"""A conmon monitor as data: its options, where its files are, its command line. Pure (no host
access), so it is tested without root; `conmon.py` runs it. See `conmon.py` for the vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class MonitorOptions:
    """How a container's monitor runs; kept in its bundle so a restarted daemon knows it too."""

    log_path: Path  # the container log conmon writes (its directory must exist)
    log_size_max: int  # bytes: beyond this conmon empties the file (see docs/containers.md)
    tty: bool = False
    # Close the container's stdin when an attach client shuts down its side. Off: the stdin
    # stays open for the container's whole life, also when the daemon dies.
    stdin_once: bool = False

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "log_path": str(self.log_path)})

    @classmethod
    def from_json(cls, text: str) -> MonitorOptions:
        data = json.loads(text)
        return cls(log_path=Path(data["log_path"]), log_size_max=int(data["log_size_max"]), tty=bool(data["tty"]),
                   stdin_once=bool(data["stdin_once"]))  # fmt: skip


@dataclass(frozen=True)
class MonitorPaths:
    """Where a container's monitor keeps its files (all in the bundle but the attach link)."""

    bundle: Path
    attach_link: Path  # <state>/attach/<id> -> bundle

    @property
    def attach(self) -> Path:
        return self.attach_link / "attach"

    @property
    def ctl(self) -> Path:
        return self.bundle / "ctl"

    @property
    def exit_file(self) -> Path:
        return self.bundle / "exit"

    @property
    def oom_file(self) -> Path:
        return self.bundle / "oom"

    @property
    def monitor_pid(self) -> Path:
        return self.bundle / "conmon.pid"

    @property
    def init_pid(self) -> Path:
        return self.bundle / "init.pid"

    @property
    def runc_log(self) -> Path:
        return self.bundle / "runc.log"

    @property
    def options(self) -> Path:
        return self.bundle / "monitor.json"


def conmon_argv(conmon: str, runc: str, runc_root: Path, container_id: str, paths: MonitorPaths,
                options: MonitorOptions) -> list[str]:
    """conmon's command line: `runc create` of the bundle under one monitor. Pure data.

    `--leave-stdin-open` unless `stdin_once`; runc's own errors go to its JSON log (as in
    `RuncRuntime`), which the daemon reads when the create fails.
    """
    argv = [
        conmon, "--api-version", "1",
        "--cid", container_id, "--cuuid", container_id, "--name", container_id,
        "--runtime", runc, "--bundle", str(paths.bundle),
        "--container-pidfile", str(paths.init_pid), "--conmon-pidfile", str(paths.monitor_pid),
        "--persist-dir", str(paths.bundle),  # where the exit and oom files go
        "--socket-dir-path", str(paths.attach_link.parent),
        "--log-path", f"k8s-file:{options.log_path}", "--log-size-max", str(options.log_size_max),
        "--stdin",
    ]  # fmt: skip
    if not options.stdin_once:
        argv.append("--leave-stdin-open")
    if options.tty:
        argv.append("--terminal")
    for arg in ("--root", str(runc_root), "--log", str(paths.runc_log), "--log-format", "json"):
        argv += ["--runtime-arg", arg]
    return argv


# conmon formats its stamps in local time: UTC gives `...+00:00` (see docs/containers.md).
CONMON_ENV = {"TZ": "UTC", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
