"""Integration fixtures: one real kleened per test session (plus ad-hoc ones where a test
needs to restart or reconfigure its daemon)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.invariants import assert_clean


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-test-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


@pytest.fixture
def api(daemon: Daemon):
    with daemon.client() as client:
        yield client


@pytest.fixture(autouse=True)
def _host_matches_api(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the session daemon: nothing leaked, nothing orphaned, no
    ghost, no zombie (tests/invariants.py)."""
    yield
    if "daemon" in request.fixturenames:
        assert_clean(request.getfixturevalue("daemon"))
