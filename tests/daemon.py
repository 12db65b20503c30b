"""Start a real kleened for a test: temporary state root, socket and host-name prefix."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.leaks import host_leaks

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Daemon:
    workdir: Path
    prefix: str
    listeners: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # added to the daemon's environment
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def socket(self) -> Path:
        return self.workdir / "kleened.sock"

    @property
    def host(self) -> str:
        return f"http://{self.socket}"

    @property
    def state_root(self) -> Path:
        return self.workdir / "state"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kleened.log"

    def write_config(self) -> None:
        config = {
            "api_listening_sockets": [{"address": f"http://{self.socket}"}, *self.listeners],
            "state_root": str(self.state_root),
            "host_prefix": self.prefix,
            "log_level": "debug",
            **self.extra,
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self, timeout: float = 15.0) -> None:
        self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kleened", "--config", str(self.config_path)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kleened exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                with contextlib.suppress(httpx.TransportError), self.client() as c:
                    if c.get("/version").status_code == 200:
                        return
            time.sleep(0.05)
        raise RuntimeError(f"kleened did not start within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"kleened did not stop on {sig}:\n{self.log()}") from None
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def wait_dead(self, timeout: float = 60.0) -> int:
        """Wait for the daemon to exit by itself (a fault point killed it); return its status."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kleened did not die within {timeout} s:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://localhost",
                            timeout=timeout)


def new_prefix() -> str:
    """A short host-name prefix unique to this test run (interface names have 15 characters)."""
    return "kt" + secrets.token_hex(2)


@contextlib.contextmanager
def running_daemon(workdir: Path, **kwargs: Any) -> Iterator[Daemon]:
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    daemon = Daemon(workdir=workdir, prefix=new_prefix(), **kwargs)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
    leaks = host_leaks(daemon.state_root, daemon.prefix)
    assert not leaks, f"kleened left these behind: {leaks}"
