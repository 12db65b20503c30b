"""The conmon driver against real conmon and runc: output, stdin, TTY, OOM, the log it writes,
and containers that outlive the process that started them (kill -9 of a starter process)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from kleened.core.fanout import Stream
from kleened.core.logfiles import Renderer, Selection
from kleened.platform.base import BindMount, HostCommandError, Limits
from kleened.platform.linux import attachsock
from kleened.platform.linux.conmon import ConmonMonitors, Monitored, MonitorGone
from kleened.platform.linux.monitorspec import MonitorOptions
from tests.integration.platform.conftest import Host, run, settled_count
from tests.unit.test_conmon import CRI_RECORD

pytestmark = pytest.mark.skipif(not Path("/usr/bin/conmon").exists(), reason="needs conmon (apt-get install conmon)")

LOG_MAX = 1 << 20
Connection = attachsock.AttachConnection | None


def _monitors_of(workdir: Path) -> list[int]:
    """conmon processes whose bundle is under `workdir` (alive or zombie)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if comm == "conmon" and os.fsencode(workdir) in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture
def monitors(host: Host) -> Iterator[ConmonMonitors]:
    """The driver on the session's runtime; afterwards no monitor, attach link or log dir is left."""
    driver = ConmonMonitors(host.runtime)
    yield driver
    assert list(driver.attach_dir.iterdir()) == [], "attach links left behind"
    assert _monitors_of(host.workdir) == [], "monitors left running"


@contextlib.asynccontextmanager
async def monitored(host: Host, monitors: ConmonMonitors, log_dir: Path, args: list[str], *, tty: bool = False,
                    stdin_once: bool = False, limits: Limits | None = None, mounts: list[BindMount] | None = None,
                    attach: bool = True, log_size_max: int = LOG_MAX) -> AsyncIterator[tuple[Monitored, Connection]]:
    """A created container, attached (before its start, so no output is missed), then started.
    Afterwards it is killed, its monitor has ended and everything is deleted."""
    cid = host.new_id()
    await host.storage.create_container_fs(cid)
    conn = None
    try:
        root = await host.storage.mount_container_fs(cid, [host.base])
        spec = host.spec(args, root, cid, tty=tty, limits=limits or Limits(), mounts=mounts or [])
        log_dir.mkdir(mode=0o700, exist_ok=True)
        options = MonitorOptions(log_path=log_dir / f"{cid}.log", log_size_max=log_size_max, tty=tty,
                                 stdin_once=stdin_once)
        container = await monitors.create(spec, options)
        try:
            conn = await container.attach() if attach else None
            await monitors.start(container)
            yield container, conn
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(20):
                if conn is not None:
                    conn.close()
                await monitors.delete(cid, container)
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(15):
            await host.storage.remove_container_fs(cid)


async def drain(conn: attachsock.AttachConnection) -> dict[int, bytes]:
    out: dict[int, bytes] = {attachsock.STDOUT: b"", attachsock.STDERR: b""}
    while (packet := await conn.receive()) is not None:
        out[packet[0]] += packet[1]
    return out


def test_output_streams_and_exit_code(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    script = "for i in 1 2 3; do echo out-$i; echo err-$i >&2; done; printf tail; exit 7"

    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", script]) as (container, conn):
            out = await drain(conn)
            status = await container.wait()
            assert (status.code, status.oom) == (7, False)
            assert out == {attachsock.STDOUT: b"out-1\nout-2\nout-3\ntail", attachsock.STDERR: b"err-1\nerr-2\nerr-3\n"}
            assert not container.monitor_running
            assert container.exit_status() == status  # also readable later, by anyone

    run(body)


def test_log_is_cri_and_renders_as_kleened_reads_it(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    script = "echo one; echo two >&2; printf 'no newline'; sleep 0.1; echo ' end'"

    async def body() -> bytes:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", script]) as (container, conn):
            await drain(conn)
            await container.wait()
            return container.options.log_path.read_bytes()

    data = run(body)
    records = data.split(b"\n")[:-1]
    assert all(CRI_RECORD.fullmatch(r) for r in records), records
    assert all(r[29:36] == b"+00:00 " for r in records)  # conmon's UTC stamp; kleened writes `Z `
    # What an adapter converts: the zone suffix. The rest (streams, F/P, content) is what
    # kleened's reader takes as it is.
    converted = b"".join(r[:29] + b"Z" + r[35:] + b"\n" for r in records)
    frames = Renderer(Selection()).frames(converted)
    stdout = b"".join(f[1:] for f in frames if f[0] == Stream.STDOUT)
    stderr = b"".join(f[1:] for f in frames if f[0] == Stream.STDERR)
    assert (stdout, stderr) == (b"one\nno newline end\n", b"two\n")


def test_rotation_by_rename_and_reopen(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    """How the daemon rotates a monitor's log: rename the file away, then tell the monitor to
    reopen its path; what it wrote before the reopen is in the renamed file, in order."""
    script = "read x; echo before-1; echo before-2; read y; echo after-1"

    async def body() -> tuple[bytes, bytes]:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", script]) as (container, conn):
            log = container.options.log_path
            await conn.send(b"go\n")
            assert (await conn.receive())[1].startswith(b"before-1")
            _wait_for(lambda: log.read_bytes().count(b"\n") == 2)
            log.rename(log.with_suffix(".1"))
            assert container.reopen_log()
            _wait_for(log.exists)
            await conn.send(b"go\n")
            await drain(conn)
            await container.wait()
            return log.with_suffix(".1").read_bytes(), log.read_bytes()

    old, new = run(body)
    assert [r[45:] for r in old.splitlines()] == [b"before-1", b"before-2"]
    assert [r[45:] for r in new.splitlines()] == [b"after-1"]


def test_log_size_max_empties_the_file(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    """conmon's own limit is no rotation: past `log_size_max` bytes it starts the file again,
    empty, and what was in it is gone (kleened rotates before that; see docs/containers.md)."""
    small = 4096
    script = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo line-$i; done"

    async def body() -> bytes:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", script], log_size_max=small) as (container, conn):
            await drain(conn)
            await container.wait()
            return container.options.log_path.read_bytes()

    data = run(body)
    lines = [r[45:] for r in data.splitlines()]
    assert len(data) <= small and lines[-1] == b"line-200" and b"line-1" not in lines


def test_stdin_stays_open_across_attach_connections(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    script = "read a; echo got:$a; read b; echo got:$b; exit 3"

    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", script]) as (container, conn):
            await conn.send(b"first\n")
            assert await conn.receive() == (attachsock.STDOUT, b"got:first\n")
            conn.close_stdin()  # without stdin_once: no effect on the container
            conn.close()
            second = await container.attach()
            try:
                await second.send(b"second\n")
                assert (await drain(second))[attachsock.STDOUT] == b"got:second\n"
            finally:
                second.close()
            assert (await container.wait()).code == 3

    run(body)


def test_stdin_once_closes_stdin_and_large_input_arrives_whole(host: Host, monitors: ConmonMonitors,
                                                               tmp_path: Path) -> None:
    payload = os.urandom(300_000).hex().encode()  # 600 kB: many packets, more than a pipe holds

    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", "wc -c; exit 5"], stdin_once=True) as (
                container, conn):
            async with trio.open_nursery() as nursery:
                out: dict[int, bytes] = {}

                async def read() -> None:
                    out.update(await drain(conn))

                nursery.start_soon(read)
                await conn.send(payload)
                conn.close_stdin()
            assert out[attachsock.STDOUT].strip() == str(len(payload)).encode()
            assert (await container.wait()).code == 5

    run(body)


def test_missing_executable_is_exit_127(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["/nonexistent"]) as (container, conn):
            out = await drain(conn)
            assert (await container.wait()).code == 127
            assert b"nonexistent" in out[attachsock.STDERR]

    run(body)


def test_tty_and_resize(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sh"], tty=True) as (container, conn):
            assert container.resize(40, 132)
            await conn.send(b"tty; stty size; echo done-$((6*7))\n")
            seen = b""
            while b"done-42" not in seen:
                packet = await conn.receive()
                assert packet is not None and packet[0] == attachsock.STDOUT
                seen += packet[1]
            assert b"/dev/pts/" in seen and b"40 132" in seen
            assert container.resize(25, 100)
            await conn.send(b"stty size; exit 4\n")
            rest = (await drain(conn))[attachsock.STDOUT]
            assert b"25 100" in rest
            assert (await container.wait()).code == 4
            assert not container.resize(10, 10)  # the monitor is gone: nobody to tell

    run(body)


def test_oom_is_recorded(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    hog = "x=a; while true; do x=$x$x; done"

    limits = Limits(memory=16 << 20, memory_swap=16 << 20)

    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", hog], limits=limits) as (container, conn):
            await drain(conn)
            status = await container.wait()
            assert status.oom and status.code == 128 + signal.SIGKILL

    run(body, timeout=60)


def test_create_failure_is_runcs_message_and_leaves_nothing(host: Host, monitors: ConmonMonitors,
                                                          tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    async def body() -> None:
        with pytest.raises(HostCommandError) as failure:
            async with monitored(host, monitors, tmp_path, ["true"], mounts=[BindMount(missing, "/mnt")]):
                pytest.fail("the container must not start")
        assert "no such file or directory" in failure.value.stderr and str(missing) in failure.value.stderr

    run(body)


def test_delete_kills_a_running_container_and_its_monitor(host: Host, monitors: ConmonMonitors,
                                                          tmp_path: Path) -> None:
    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sleep", "1000"], attach=False) as (container, _):
            assert container.monitor_running and await settled_count(host.runtime, container.container_id, 2) == 2
            assert set(monitors.find_all()) == {container.container_id}
            found = monitors.find(container.container_id)
            assert found is not None and found.monitor_alive and found.exit_status() is None
            assert (found.init_pid, found.monitor_pid) == (container.init_pid, container.monitor_pid)

    run(body)


def test_cancelled_create_leaves_nothing(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    async def body() -> None:
        for delay in (0, 0.01, 0.03, 0.1):
            with trio.move_on_after(delay):
                async with monitored(host, monitors, tmp_path, ["sleep", "1000"]) as (container, _):
                    await container.wait()

    run(body, timeout=60)


# --- a starter that dies: kill -9 of the process that started the container ---------------------

STARTER = textwrap.dedent("""
    import sys, trio
    from pathlib import Path
    from kleened.platform.base import ContainerSpec, ProcessSpec
    from kleened.platform.linux import reaper
    from kleened.platform.linux.conmon import ConmonMonitors
    from kleened.platform.linux.monitorspec import MonitorOptions
    from kleened.platform.linux.runc import RuncRuntime

    state, prefix, cid, rootfs, log = sys.argv[1:6]
    reaper.become_subreaper()  # as kleened is: the monitor is this process's child

    async def main():
        monitors = ConmonMonitors(RuncRuntime(Path(state), prefix))
        spec = ContainerSpec(id=cid, rootfs=Path(rootfs), hostname=cid, process=ProcessSpec(
            args=["sh", "-c", "i=0; while read line; do i=$((i+1)); echo tick-$i-$line; done; exit 9"],
            env=["PATH=/bin"]))
        container = await monitors.create(spec, MonitorOptions(log_path=Path(log), log_size_max=1 << 20))
        conn = await container.attach()
        await monitors.start(container)
        await conn.send(b"before\\n")
        assert (await conn.receive())[1] == b"tick-1-before\\n"
        print(container.monitor_pid, flush=True)
        await trio.sleep_forever()

    trio.run(main)
""")


def _wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_container_outlives_a_killed_starter(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    cid = host.new_id()
    log = tmp_path / "ctr.log"
    run(host.storage.create_container_fs, cid)
    try:
        root = run(host.storage.mount_container_fs, cid, [host.base])
        starter = subprocess.Popen([sys.executable, "-c", STARTER, str(host.runtime.state_dir), host.prefix, cid,
                                    str(root), str(log)], stdout=subprocess.PIPE)  # fmt: skip
        assert starter.stdout is not None
        monitor_pid = int(starter.stdout.readline())
        starter.kill()  # kill -9: its attach connection and everything it held are gone
        starter.wait()
        starter.stdout.close()
        assert Path(f"/proc/{monitor_pid}").exists()

        async def readopt() -> None:
            found = monitors.find(cid)
            assert found is not None and found.monitor_pid == monitor_pid and found.monitor_alive
            container = monitors.adopt(found)
            assert (await host.runtime.list_containers()) == {cid: "running"}
            conn = await container.attach()
            try:
                await conn.send(b"after\n")  # stdin stayed open when the starter died
                assert await conn.receive() == (attachsock.STDOUT, b"tick-2-after\n")
            finally:
                conn.close()
            _wait_for(lambda: b"tick-2-after" in log.read_bytes())  # the log is still written
            await host.runtime.kill(cid, signal.SIGTERM)
            status = await container.wait()
            assert status.code == 128 + signal.SIGTERM and not status.oom
            await monitors.delete(cid, container)

        run(readopt)
        assert b"tick-1-before" in log.read_bytes()
    finally:
        with contextlib.suppress(MonitorGone):
            run(monitors.delete, cid)
        run(host.storage.remove_container_fs, cid)


def test_exit_while_nobody_watches_is_read_later(host: Host, monitors: ConmonMonitors, tmp_path: Path) -> None:
    async def body() -> None:
        async with monitored(host, monitors, tmp_path, ["sh", "-c", "read x; exit 6"], attach=False) as (
                container, _):
            cid = container.container_id
            container.close()  # stop watching, as a daemon that exits does
            conn = await attachsock.AttachConnection.connect(container.paths.attach)
            await conn.send(b"go\n")
            conn.close()
            _wait_for(container.paths.exit_file.exists)
            found = monitors.find(cid)  # a reader that was not there when it ended
            assert found is not None and found.exit_status().code == 6
            later = monitors.adopt(found)  # the monitor is our (zombie) child here: reaped by wait
            assert (await later.wait()).code == 6 and not later.monitor_running

    run(body)
