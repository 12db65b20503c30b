"""The upstream CLI (kleene-cli 0.1.0rc4, in its own virtualenv) against our daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import Klee, Result, run_cli
from tests.conftest import require
from tests.daemon import ROOT, Daemon
from tests.integration.conftest import _host_matches_api, api, daemon  # noqa: F401  (fixtures shared with integration)

UPSTREAM_KLEE = ROOT / ".venv-upstream" / "bin" / "klee"


def run_upstream(host: str, *args: str, input: str | None = None, timeout: float = 60, env: dict | None = None,
                 cwd: Path | None = None) -> Result:
    return run_cli([str(UPSTREAM_KLEE), "--host", host, *args], input=input, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture
def klee(daemon: Daemon) -> Klee:  # noqa: F811
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    return lambda *args, **kw: run_upstream(daemon.host, *args, **kw)
