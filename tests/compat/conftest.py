"""The upstream CLI (kleene-cli 0.1.0rc4, in its own virtualenv) against our daemon."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.daemon import ROOT, Daemon
from tests.integration.conftest import api, daemon  # noqa: F401  (fixtures shared with integration)

UPSTREAM_KLEE = ROOT / ".venv-upstream" / "bin" / "klee"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


Klee = Callable[..., Result]


def run_upstream(host: str, *args: str, input: str | None = None, timeout: float = 60, env: dict | None = None,
                 cwd: Path | None = None) -> Result:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
    environment.update({"COLUMNS": "200", "TERM": "dumb", **(env or {})})
    proc = subprocess.run([str(UPSTREAM_KLEE), "--host", host, *args], capture_output=True, text=True,
                          input=input, timeout=timeout, env=environment, cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def klee(daemon: Daemon) -> Klee:  # noqa: F811
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    return lambda *args, **kw: run_upstream(daemon.host, *args, **kw)
