"""MonitoredRuntime (runc under conmon) against real conmon and runc: create/start with both
streams read from one attach connection, stdin through it, and a container found and adopted
by a second runtime object, as a restarted daemon does."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from kleened.platform.linux.monitored import MonitoredProcess, MonitoredRuntime
from tests.integration.platform.conftest import Host, collect, run
from tests.integration.platform.test_linux_conmon import _monitors_of

pytestmark = pytest.mark.skipif(not Path("/usr/bin/conmon").exists(), reason="needs conmon (apt-get install conmon)")


@pytest.fixture
def runtime(host: Host) -> Iterator[MonitoredRuntime]:
    """The runtime on the session's runc; afterwards no monitor or attach link is left."""
    monitored = MonitoredRuntime(host.runtime)
    yield monitored
    assert list(monitored.monitors.attach_dir.iterdir()) == [], "attach links left behind"
    assert _monitors_of(host.workdir) == [], "monitors left running"


@contextlib.asynccontextmanager
async def started(host: Host, runtime: MonitoredRuntime, log_dir: Path, args: list[str],
                  tty: bool = False) -> AsyncIterator[tuple[str, MonitoredProcess]]:
    cid = host.new_id()
    await host.storage.create_container_fs(cid)
    try:
        root = await host.storage.mount_container_fs(cid, [host.base])
        log_dir.mkdir(exist_ok=True)
        spec = host.spec(args, root, cid, tty=tty, log_path=log_dir / "live.log")
        await runtime.create(spec)
        try:
            yield cid, await runtime.start(cid)
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(20):
                await runtime.delete(cid)
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(15):
            await host.storage.remove_container_fs(cid)


def test_streams_stdin_exit_code_and_the_log(host: Host, runtime: MonitoredRuntime, tmp_path: Path) -> None:
    script = "read line; for i in 1 2 3; do echo out-$i-$line; echo err-$i >&2; done; exit 7"

    async def body() -> tuple[int, bytes, bytes]:
        async with started(host, runtime, tmp_path, ["sh", "-c", script]) as (_cid, proc):
            assert proc.stdin is not None and proc.stderr is not None
            await proc.stdin.send_all(b"hi\n")
            result = await collect(proc)
            await proc.aclose()
            return result

    code, out, err = run(body)
    assert (code, out, err) == (7, b"out-1-hi\nout-2-hi\nout-3-hi\n", b"err-1\nerr-2\nerr-3\n")
    assert (tmp_path / "live.log").read_bytes().count(b" stdout F out-") == 3  # conmon wrote the log


def test_a_second_runtime_finds_and_adopts_a_running_container(host: Host, runtime: MonitoredRuntime,
                                                               tmp_path: Path) -> None:
    """The tap and the watch of the first are closed (a daemon gone); a new runtime object on the
    same state finds the container running, adopts it, sees its output and its exit status."""

    async def body() -> None:
        script = "while read line; do echo got-$line; done"
        async with started(host, runtime, tmp_path, ["sh", "-c", script]) as (cid, proc):
            await proc.aclose()
            runtime._watched.pop(cid).close()  # the first "daemon" stops watching
            again = MonitoredRuntime(host.runtime)
            found = again.find_containers()[cid]
            assert (found.running, found.exit_code, found.tty) == (True, None, False)
            adopted = await again.adopt(cid)
            assert adopted.pid == proc.pid
            assert adopted.stdin is not None
            await adopted.stdin.send_all(b"x\n")
            assert await adopted.stdout.receive_some() == b"got-x\n"
            await again.kill(cid, signal.SIGKILL, all_processes=True)
            assert await adopted.wait() == 128 + signal.SIGKILL
            ended = again.find_containers()[cid]
            assert (ended.running, ended.exit_code) == (False, 128 + signal.SIGKILL) and ended.finished_at
            await adopted.aclose()
            await again.delete(cid)
            assert again.find_containers() == {}

    run(body)
