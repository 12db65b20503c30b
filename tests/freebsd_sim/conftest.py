"""Fixtures: a fresh SIMULATED FreeBSD host per test (see tests/freebsd_sim/__init__.py), and the
FreeBSD drivers pointed at it. Needs root (chroot, bind mounts, tmpfs) and busybox; in CI a
missing requirement fails (tests/conftest.py `require`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kleene_protocol.ids import new_id
from kleened.platform.base import Limits
from kleened.platform.freebsd import jail
from kleened.platform.freebsd.command import Commands
from kleened.platform.freebsd.images import FreeBSDRootfs
from kleened.platform.freebsd.network import FreeBSDNetworkDriver
from kleened.platform.freebsd.runtime import JailRuntime, JailSpec
from kleened.platform.freebsd.storage import ZfsStorage
from kleened.platform.linux.process import RuncProcess
from tests import rootfs
from tests.conftest import require
from tests.freebsd_sim.host import SimHost
from tests.integration.platform.conftest import _zombies, reap_zombies
from tests.integration.platform.conftest import collect as collect_output
from tests.integration.platform.conftest import run as run_with_deadline

T = TypeVar("T")
TEST_TIMEOUT = 60  # seconds for one trio.run: every simulated command starts a Python


def run(fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = TEST_TIMEOUT) -> T:
    return run_with_deadline(fn, *args, timeout=timeout)


@pytest.fixture(scope="session")
def busybox_tree() -> Iterator[Path]:
    require(os.geteuid() == 0, "the simulated FreeBSD host needs root (chroot, mounts)")
    require(shutil.which("busybox") is not None, "needs busybox (Debian's busybox-static)")
    with tempfile.TemporaryDirectory(prefix="fbsim-rootfs-") as tmp:
        yield rootfs.session_rootfs(Path(tmp))


@pytest.fixture(scope="session")
def busybox_tarball(busybox_tree: Path) -> Path:
    return rootfs.session_tarball(busybox_tree.parent)


@contextlib.contextmanager
def simulated_host(busybox_tree: Path, prefix: str = "fbsim-") -> Iterator[SimHost]:
    """A clean simulated host; afterwards nothing may be left running, mounted or created."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    host = SimHost(root, pycache=busybox_tree.parent / "pycache")
    try:
        yield host
        leaks = host.leaks() + [f"zombie {z}" for z in _zombies()]
        assert not leaks, f"the test left on the simulated host: {leaks}"
    finally:
        host.cleanup()
        reap_zombies()  # what a failed test's jails ran must not fail the tests after it
        if not host.mounts():
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sim(busybox_tree: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimHost]:
    with simulated_host(busybox_tree) as host:
        monkeypatch.setenv("PATH", f"{host.bin}:{os.environ.get('PATH', '')}")
        yield host


@pytest.fixture
def commands(sim: SimHost) -> Commands:
    """The drivers' command runner, resolving tool names to the simulation's stand-ins."""
    found = Commands.from_path(str(sim.bin))
    assert found.tools["jail"] == str(sim.bin / "jail")
    return found


ROOT_DATASET = "zroot/kleene"
ENV = ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"]


@dataclass
class Drivers:
    """The FreeBSD drivers, on the simulated host, with kleened's datasets prepared."""

    commands: Commands
    storage: ZfsStorage
    runtime: JailRuntime
    network: FreeBSDNetworkDriver
    rootfs: FreeBSDRootfs
    tarball: Path

    async def image(self) -> str:
        """A sealed base image holding the busybox tree (fetched from a file URL, as `fetch` does)."""
        image_id, path = await self.storage.create_layer()
        async with self.rootfs.fetched(rootfs.file_url(self.tarball), _ignore) as archive:
            await self.rootfs.extract(archive, path, _ignore)
        await self.storage.seal_layer(image_id)
        return image_id

    async def jail(self, image_id: str, *, network: jail.Network | None = None, params: list[str] | None = None,
                   mounts: list | None = None, limits: Limits | None = None) -> tuple[str, Path]:
        """A container filesystem cloned from `image_id` and its persistent jail."""
        cid = new_id()
        root = await self.storage.create_container_fs(cid, image_id)
        spec = JailSpec(name=cid, root=root, network=network or jail.Network("host"), user="root",
                        params=self.runtime.check_params(params or []), mounts=mounts or [],
                        limits=limits or Limits())
        await self.runtime.create_jail(spec)
        return cid, root

    async def remove(self, cid: str, root: Path) -> None:
        await self.runtime.delete(cid, root)
        await self.storage.remove_container_fs(cid)

    async def teardown(self) -> None:
        """Remove every image and container dataset (the sim fixture then checks for leaks)."""
        for cid in await self.storage.list_container_fs():
            await self.remove(cid, await self.storage.rootfs(cid))
        for image_id in await self.storage.list_images():
            await self.storage.remove_image(image_id)


async def _ignore(*_args: object) -> None:
    return None


@pytest.fixture
def drivers(sim: SimHost, commands: Commands, busybox_tarball: Path, tmp_path: Path) -> Iterator[Drivers]:
    built = Drivers(commands=commands, storage=ZfsStorage(commands, ROOT_DATASET), runtime=JailRuntime(commands),
                    network=FreeBSDNetworkDriver(commands, "kt"), rootfs=FreeBSDRootfs(tmp_path / "work", commands),
                    tarball=busybox_tarball)
    run(built.storage.prepare)
    yield built
    run(built.teardown)


async def collect(proc: RuncProcess, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Feed `stdin`, then what the Linux platform tests do (close stdin, read both streams to the
    end, wait), then close our ends."""
    if stdin and proc.stdin is not None:
        await proc.stdin.send_all(stdin)
    result = await collect_output(proc)
    await proc.aclose()
    return result
