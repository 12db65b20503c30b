"""Fixtures: a fresh SIMULATED FreeBSD host per test (see tests/freebsd_sim/__init__.py), and the
FreeBSD drivers pointed at it. Needs root (chroot, bind mounts, tmpfs) and busybox; in CI a
missing requirement fails (tests/conftest.py `require`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from kleened.platform.freebsd.command import Commands
from tests import rootfs
from tests.conftest import require
from tests.freebsd_sim.host import SimHost

T = TypeVar("T")
TEST_TIMEOUT = 60  # seconds for one trio.run


def run(fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = TEST_TIMEOUT) -> T:
    async def main() -> T:
        with trio.fail_after(timeout):
            return await fn(*args)

    return trio.run(main)


@pytest.fixture(scope="session")
def busybox_tree() -> Iterator[Path]:
    require(os.geteuid() == 0, "the simulated FreeBSD host needs root (chroot, mounts)")
    require(shutil.which("busybox") is not None, "needs busybox (Debian's busybox-static)")
    with tempfile.TemporaryDirectory(prefix="fbsim-rootfs-") as tmp:
        yield rootfs.session_rootfs(Path(tmp))


@pytest.fixture(scope="session")
def busybox_tarball(busybox_tree: Path) -> Path:
    return rootfs.session_tarball(busybox_tree.parent)


@pytest.fixture
def sim(busybox_tree: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimHost]:
    """A clean simulated host; afterwards nothing may be left running, mounted or created."""
    root = Path(tempfile.mkdtemp(prefix="fbsim-", dir="/tmp"))
    host = SimHost(root, pycache=busybox_tree.parent / "pycache")
    monkeypatch.setenv("PATH", f"{host.bin}:{os.environ.get('PATH', '')}")
    try:
        yield host
        leaks = host.leaks()
        assert not leaks, f"the test left on the simulated host: {leaks}"
    finally:
        host.cleanup()
        if not host.mounts():
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def commands(sim: SimHost) -> Commands:
    """The drivers' command runner, resolving tool names to the simulation's stand-ins."""
    found = Commands.from_path(str(sim.bin))
    assert found.tools["jail"] == str(sim.bin / "jail")
    return found
