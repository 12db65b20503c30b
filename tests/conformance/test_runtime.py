"""`Runtime` conformance: create then start, exit codes, streams, stdin, a TTY, exec, kill, stop
then delete, a container never started, a second create of the same id. Written against the
interface as core drives it (`Supervisor.start_container`, `Containers`' teardown) and run
against every backend of conftest.py (jails on a SIMULATED FreeBSD host in CI: processes really
run, chrooted in the image, so exit codes, signals, streams and ptys are real).

Where the backends differ on purpose, the test says so:
- a missing executable: runc under tini gives a process that exits 127; a jail gives one too
  (env(1) in jexec exits 127); a runtime may also refuse to start it with a `HostCommandError`
  core turns into exit code 127 (`core.containers._launch_error`), which is what runc's exec
  does, so both ways are accepted;
- `list_containers`: runc reports a created container as "created", a jail exists as soon as it
  is created and is "running"; the test only checks which ids are listed.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from kleene_protocol.ids import new_id
from kleened.core.containers import _launch_error
from kleened.core.errors import ExecFailed
from kleened.platform.base import BindMount, ContainerSpec, HostCommandError, Process, ProcessSpec
from tests.conformance.conftest import Backend
from tests.freebsd_sim.conftest import collect, run

ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
SHORT = 15  # seconds for a cleanup step


def spec_of(cid: str, root: Path, args: list[str], log_dir: Path, *, tty: bool = False,
            mounts: list[BindMount] | None = None) -> ContainerSpec:
    return ContainerSpec(id=cid, rootfs=root, hostname=cid, process=ProcessSpec(args=args, env=ENV, tty=tty),
                         mounts=list(mounts or []), log_path=log_dir / f"{cid}.log")


@contextlib.asynccontextmanager
async def filesystem(backend: Backend) -> AsyncIterator[tuple[str, Path]]:
    """A container filesystem from the base layer, mounted; removed afterwards."""
    base = await backend.base_layer()
    cid = new_id()
    await backend.layers.create_container_fs(cid, [base])
    try:
        yield cid, await backend.layers.mount_container_fs(cid, [base])
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(SHORT):
            await backend.layers.unmount_container_fs(cid)
            await backend.layers.remove_container_fs(cid)


@contextlib.asynccontextmanager
async def started(backend: Backend, tmp: Path, args: list[str], *, tty: bool = False,
                  mounts: list[BindMount] | None = None) -> AsyncIterator[tuple[str, Path, Process]]:
    """Create then start, as core does; afterwards (also when the test fails) killed, reaped,
    deleted and its filesystem removed, as core's teardown does."""
    async with filesystem(backend) as (cid, root):
        await backend.runtime.create(spec_of(cid, root, args, tmp, tty=tty, mounts=mounts))
        try:
            process = await backend.runtime.start(cid)
            try:
                yield cid, root, process
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(SHORT):
                    await backend.runtime.kill(cid, signal.SIGKILL, all_processes=True)
                    await process.wait()
                    await process.aclose()
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(SHORT):
                await backend.runtime.delete(cid)


async def run_main(backend: Backend, tmp: Path, args: list[str],
                   stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """The exit code, stdout and stderr of `args` as a container's main process; a launch the
    runtime refuses is reported as core reports it (exit code 127 or 126, the reason on stderr)."""
    try:
        async with started(backend, tmp, args) as (_cid, _root, process):
            return await collect(process, stdin)  # type: ignore[arg-type]
    except HostCommandError as exc:
        return _as_core_reports(exc)


def _as_core_reports(exc: HostCommandError) -> tuple[int, bytes, bytes]:
    reported = _launch_error(exc)
    if not isinstance(reported, ExecFailed):
        raise exc
    return reported.exit_code, b"", str(reported).encode()


async def wait_until(predicate) -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` (async) until true; the test's deadline bounds it."""
    while not await predicate():
        await trio.sleep(0.02)


def test_real_exit_codes_of_the_main_process(backend: Backend, tmp_path: Path):
    async def body() -> list[tuple[int, bytes, bytes]]:
        return [await run_main(backend, tmp_path, args) for args in (
            ["true"],
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            ["/no/such/program"],
            ["sh", "-c", "kill -USR1 $$"],
        )]

    ok, three, missing, signalled = run(body)
    assert ok == (0, b"", b"")
    assert three == (3, b"out\n", b"err\n")  # stdout and stderr apart
    assert missing[0] == 127 and b"/no/such/program" in missing[2]
    assert signalled[0] == 128 + signal.SIGUSR1


def test_stdin_reaches_the_main_process(backend: Backend, tmp_path: Path):
    async def body() -> tuple[int, bytes, bytes]:
        return await run_main(backend, tmp_path, ["sh", "-c", "read line; echo got:$line; echo to-err >&2"],
                              stdin=b"hello\n")

    assert run(body) == (0, b"got:hello\n", b"to-err\n")


def test_a_tty_main_process(backend: Backend, tmp_path: Path):
    async def body() -> tuple[int, bytes, bool]:
        async with started(backend, tmp_path, ["sh"], tty=True) as (_cid, _root, process):
            no_stderr = process.stderr is None
            assert process.stdin is not None
            process.resize(40, 100)
            await process.stdin.send_all(b"tty; stty size; exit 5\n")
            output = bytearray()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):  # EIO at the end
                async for chunk in process.stdout:
                    output.extend(chunk)
            return await process.wait(), bytes(output), no_stderr

    code, output, no_stderr = run(body)
    assert code == 5 and no_stderr
    assert b"/dev/pts/" in output and b"40 100" in output
    assert b"\r\n" in output  # a terminal's line discipline


def test_exec_into_a_running_container_has_its_own_exit_code(backend: Backend, tmp_path: Path):
    async def body() -> list[tuple[int, bytes, bytes]]:
        results = []
        async with started(backend, tmp_path, ["sh", "-c", "echo main > /tmp/mark; exec sleep 1000"]) as (
                cid, _root, main):
            for args, stdin in ((["sh", "-c", "cat /tmp/mark; echo oops >&2; exit 4"], None),
                                (["sh", "-c", "read line; echo exec-got:$line"], b"in\n"),
                                (["/no/such/program"], None)):
                if args == ["sh", "-c", "cat /tmp/mark; echo oops >&2; exit 4"]:
                    await wait_until(lambda: _has_mark(backend, cid))
                try:
                    results.append(await collect(await backend.runtime.exec(cid, ProcessSpec(args=args, env=ENV)),
                                                 stdin))
                except HostCommandError as exc:
                    results.append(_as_core_reports(exc))
            tty = await backend.runtime.exec(cid, ProcessSpec(args=["sh", "-c", "tty; exit 6"], env=ENV, tty=True))
            tty_out = bytearray()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async for chunk in tty.stdout:
                    tty_out.extend(chunk)
            results.append((await tty.wait(), bytes(tty_out), b""))
            await tty.aclose()
            await backend.runtime.kill(cid, signal.SIGTERM)  # the main process ran on through the execs
            results.append((await main.wait(), b"", b""))
        return results

    mark, piped, missing, tty, main = run(body)
    assert mark == (4, b"main\n", b"oops\n")
    assert piped == (0, b"exec-got:in\n", b"")
    assert missing[0] == 127 and b"/no/such/program" in missing[2]
    assert tty[0] == 6 and b"/dev/pts/" in tty[1]
    assert main[0] == 128 + signal.SIGTERM


async def _has_mark(backend: Backend, cid: str) -> bool:
    proc = await backend.runtime.exec(cid, ProcessSpec(args=["test", "-s", "/tmp/mark"], env=ENV))
    code, _out, _err = await collect(proc)  # type: ignore[arg-type]
    return code == 0


def test_kill_with_a_signal_then_wait(backend: Backend, tmp_path: Path):
    async def body() -> tuple[int, int]:
        async with started(backend, tmp_path, ["sleep", "1000"]) as (cid, _root, main):
            await backend.runtime.kill(cid, signal.SIGTERM)
            first = await main.wait()
        async with started(backend, tmp_path, ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]) as (cid, _root, main):
            await backend.runtime.kill(cid, signal.SIGKILL, all_processes=True)  # what stop does after the grace
            second = await main.wait()
        return first, second

    assert run(body) == (128 + signal.SIGTERM, 128 + signal.SIGKILL)


def test_stop_then_delete_leaves_nothing(backend: Backend, tmp_path: Path):
    """Stop as core does it (the stop signal, the main process's exit, delete); then the runtime
    lists nothing of the container, a restarted daemon would find nothing, and the host holds
    nothing of it (conftest.py `traces`: runc state, bundle, cgroup, monitor; jail, mounts, rctl)."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "note").write_text("from the host\n")
    mounts = [BindMount(source=tmp_path / "shared", destination="/data", read_only=True)]

    async def body() -> tuple[bool, int, list[str], dict, dict, list[str]]:
        async with filesystem(backend) as (cid, root):
            await backend.runtime.create(spec_of(cid, root, ["sh", "-c", "cat /data/note; exec sleep 1000"],
                                                 tmp_path, mounts=mounts))
            main = await backend.runtime.start(cid)
            listed = cid in await backend.runtime.list_containers()
            running = backend.traces(cid, root)
            seen = b""  # the command ran before the stop signal: a TERM before `cat` leaves no output
            while not seen.endswith(b"from the host\n"):
                chunk = await main.stdout.receive_some()
                assert chunk, f"the output ended early: {seen!r}"
                seen += chunk
            await backend.runtime.kill(cid, signal.SIGTERM)
            code, out, _err = await collect(main)  # type: ignore[arg-type]
            assert seen + out == b"from the host\n"
            await backend.runtime.delete(cid)
            await backend.runtime.delete(cid)  # idempotent
            return (listed, code, running, await backend.runtime.list_containers(),
                    backend.runtime.find_containers(), backend.traces(cid, root))

    listed, code, running, after, found, left = run(body)
    assert listed and code == 128 + signal.SIGTERM
    assert running, "the traces see nothing of a running container: they would prove nothing"
    assert after == {} and found == {} and left == []


def test_a_container_never_started_is_deleted(backend: Backend, tmp_path: Path):
    async def body() -> tuple[bool, list[str], dict, list[str]]:
        async with filesystem(backend) as (cid, root):
            await backend.runtime.create(spec_of(cid, root, ["echo", "never"], tmp_path))
            listed = cid in await backend.runtime.list_containers()
            created = backend.traces(cid, root)
            await backend.runtime.delete(cid)
            return listed, created, await backend.runtime.list_containers(), backend.traces(cid, root)

    listed, created, after, left = run(body)
    assert listed and created
    assert after == {} and left == []


def test_a_second_create_of_the_same_id_is_refused_and_the_first_runs_on(backend: Backend, tmp_path: Path):
    """The interface leaves the error open (runc: its bundle exists; a jail: its name is in use);
    what matters is that the refusal undoes only its own work: the running container keeps its
    mounts and its process, and ends with its own exit code."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "note").write_text("still here\n")
    mounts = [BindMount(source=tmp_path / "shared", destination="/data", read_only=True)]

    async def body() -> tuple[bytes, int, bytes]:
        async with started(backend, tmp_path, ["sh", "-c", "read line; cat /data/note; exit 9"],
                           mounts=mounts) as (cid, root, main):
            with pytest.raises((OSError, HostCommandError, ValueError)):
                await backend.runtime.create(spec_of(cid, root, ["true"], tmp_path, mounts=mounts))
            seen = await collect(await backend.runtime.exec(cid, ProcessSpec(args=["cat", "/data/note"], env=ENV)))
            code, out, _err = await collect(main, b"go\n")  # type: ignore[arg-type]
            return seen[1], code, out

    assert run(body) == (b"still here\n", 9, b"still here\n")
