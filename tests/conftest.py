"""Shared test helpers: requirements that must never silently skip in CI."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip locally when a requirement is missing; in CI a missing requirement is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"requirement missing in CI: {why}")
    pytest.skip(why)


def require_root_runtime() -> None:
    require(os.geteuid() == 0, "needs root")
    for tool in ("runc", "tini-static", "busybox", "nft", "ip"):
        require(shutil.which(tool) is not None, f"needs {tool} on PATH")
