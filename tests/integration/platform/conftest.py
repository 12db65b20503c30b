"""Fixtures for the Linux drivers against the real host: runc, overlayfs, cgroups.

One temporary state dir and one unique host prefix per session; the busybox base layer is
built once. Every test that touches the host takes `host` (a `Host`), which checks afterwards
that nothing leaked: runc containers, mounts under the state dir, cgroup dirs with the prefix,
fds of this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from kleened.platform.base import BindMount, ContainerSpec, Limits, NetworkMode, ProcessSpec
from kleened.platform.linux import mountinfo, reaper
from kleened.platform.linux.overlay import OverlayStorage
from kleened.platform.linux.process import RuncProcess
from kleened.platform.linux.runc import RuncRuntime
from tests import rootfs
from tests.conftest import require_root_runtime

T = TypeVar("T")
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
TEST_TIMEOUT = 30  # seconds for one trio.run


def run(fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = TEST_TIMEOUT) -> T:
    """Run an async test body under trio with a deadline (no pytest-trio needed)."""

    async def main() -> T:
        with trio.fail_after(timeout):
            return await fn(*args)

    return trio.run(main)


async def settled_count(runtime: RuncRuntime, container_id: str, expected: int, timeout: float = 15) -> int:
    """The container's process count once it is `expected`, else the count at the deadline.

    tini (the init) forks the command after `runc start` returns, and a process killed a moment
    ago may not have left the cgroup yet: a count read at once can be off by one either way.
    """
    with trio.move_on_after(timeout):
        while runtime.process_count(container_id) != expected:
            await trio.sleep(0.01)
    return runtime.process_count(container_id)


@dataclass
class Host:
    storage: OverlayStorage
    runtime: RuncRuntime
    base: str  # the busybox layer id
    workdir: Path
    prefix: str
    _names: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        return secrets.token_hex(6)

    def spec(self, args: list[str], rootfs: Path, container_id: str, **kw: Any) -> ContainerSpec:
        tty = kw.pop("tty", False)
        process = kw.pop("process", None) or ProcessSpec(args=args, env=ENV, tty=tty)
        return ContainerSpec(id=container_id, rootfs=rootfs, hostname=container_id, process=process, **kw)

    @contextlib.asynccontextmanager
    async def container(
        self,
        args: list[str],
        *,
        layers: list[str] | None = None,
        mounts: list[BindMount] | None = None,
        network: NetworkMode = NetworkMode.HOST,
        params: list[str] | None = None,
        process: ProcessSpec | None = None,
        tty: bool = False,
        limits: Limits | None = None,
    ) -> AsyncIterator[tuple[str, RuncProcess]]:
        """A started container; on exit (also when cancelled) it is killed, reaped and removed.

        This is the caller-side cleanup the supervisor does: kill KILL, wait, delete, unmount.
        """
        cid = self.new_id()
        await self.storage.create_container_fs(cid)
        try:
            root = await self.storage.mount_container_fs(cid, [self.base] if layers is None else layers)
            spec = self.spec(args, root, cid, mounts=mounts or [], network=network, process=process, tty=tty,
                             params=self.runtime.check_params(params or []), limits=limits or Limits())  # fmt: skip
            proc = await self.runtime.run(spec)
            try:
                yield cid, proc
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(15):
                    await self.runtime.kill(cid, signal.SIGKILL)
                    await proc.wait()
                    await proc.aclose()
                    await self.runtime.delete(cid)
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(15):
                await self.storage.remove_container_fs(cid)


async def collect(proc: RuncProcess) -> tuple[int, bytes, bytes]:
    """Read stdout and stderr to EOF concurrently (a full pipe would block the container), then wait."""
    out, err = bytearray(), bytearray()

    async def pump(stream: trio.abc.ReceiveStream | None, sink: bytearray) -> None:
        if stream is not None:
            async for chunk in stream:
                sink.extend(chunk)

    if proc.stdin is not None:
        await proc.stdin.aclose()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, proc.stdout, out)
        nursery.start_soon(pump, proc.stderr, err)
        code = await proc.wait()
    return code, bytes(out), bytes(err)


def _cgroup_dirs_named(name: str) -> list[str]:
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if top.count("/") > 8:
            dirs[:] = []
            continue
        found += [os.path.join(top, d) for d in dirs if d == name]
    return found


def _container_cgroups(prefix: str) -> list[str]:
    """Container cgroups (`<prefix>/<id>`) that exist; the `<prefix>` parents stay while the
    runtime is in use (`RuncRuntime.close` removes them)."""
    return [os.path.join(parent, d) for parent in _cgroup_dirs_named(prefix) for d in os.listdir(parent)
            if os.path.isdir(os.path.join(parent, d))]


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """This process reaps its orphaned descendants inside (as kleened does), and no longer after:
    processes orphaned by later tests (a dockerd's shims) then go to init, not to us as zombies."""
    was = reaper.is_subreaper()
    reaper.become_subreaper()
    try:
        yield
    finally:
        if not was and ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER, 0)")


_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(scope="session")
def session_host() -> Iterator[Host]:
    require_root_runtime()
    workdir = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))  # short: console socket paths
    prefix = f"kt{secrets.token_hex(3)}"
    try:
        storage = OverlayStorage(workdir / "state")
        runtime = RuncRuntime(workdir / "run", prefix)

        async def make_base() -> str:
            layer_id, path = await storage.create_layer()
            rootfs.build(path)
            return layer_id

        yield Host(storage, runtime, run(make_base), workdir, prefix)
    finally:
        run(runtime.close)
        leftover = mountinfo.mounts_under(workdir)
        if not leftover:
            shutil.rmtree(workdir)
        assert not leftover, f"mounts left under {workdir}: {leftover}"
        assert _cgroup_dirs_named(prefix) == [], "cgroup parents left behind"


@pytest.fixture
def host(session_host: Host) -> Iterator[Host]:
    """The session's host, this process its subreaper for the test only (as kleened is): what the
    daemons of later tests orphan goes to init, not to this process as zombies."""
    before, zombies_before = _fds(), set(_zombies())
    with subreaper():
        yield session_host
        assert run(session_host.runtime.list_containers) == {}, "runc containers left behind"
        assert mountinfo.mounts_under(session_host.workdir) == [], "mounts left behind"
        assert _container_cgroups(session_host.prefix) == [], "cgroup dirs left behind"
        assert session_host.storage.list_container_fs() == [], "container filesystems left behind"
        assert list(session_host.runtime.bundles.iterdir()) == [], "bundles left behind"
        assert sorted(set(_zombies()) - zombies_before) == [], "unreaped children"
    leaked = _fds() - before
    assert not leaked, f"fds leaked: {[os.readlink(f'/proc/self/fd/{fd}') for fd in leaked if _exists(fd)]}"


def _zombies() -> list[str]:
    """Our children that exited and nobody reaped (the daemon must reap everything it starts)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:  # any process of the host may vanish meanwhile: ENOENT or ESRCH
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.append(pid + ":" + Path(f"/proc/{pid}/comm").read_text().strip())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def reap_zombies() -> list[str]:
    """Reap this process's zombie children (what a failed test left); return them."""
    found = _zombies()
    for zombie in found:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(zombie.split(":", 1)[0]), os.WNOHANG)
    return found


def _exists(fd: str) -> bool:
    return os.path.exists(f"/proc/self/fd/{fd}")
