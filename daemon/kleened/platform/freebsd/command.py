"""The one way the FreeBSD drivers run host commands, and start the processes of jails.

Every module of this package first computes command lines as data: argv lists whose first word
is a *tool name* (`jail`, `zfs`, `ifconfig`, ...). `Commands` resolves the name to a path and
runs the line: no shell, closed fds, a timeout, a DEBUG line, `HostCommandError` on failure
(`kleened.platform.posix.hostcmd.run`, shared with the Linux drivers).

Tool paths: absolute by default (`TOOLS`, FreeBSD's base system), so a daemon started with an
odd PATH never runs another `zfs`. `Commands.from_path()` looks the names up on PATH instead:
that is how the simulated FreeBSD host of the tests (tests/freebsd_sim) puts its stand-ins in.

Processes of jails (`spawn`) are our own children (`jexec` execs the command, so the pid we hold
*is* the command and its exit status is the command's: upstream bug B2 avoided). With a TTY the
child gets a pty made here (`os.openpty`), and a tiny Python shim makes it the controlling
terminal (`os.login_tty`: setsid + TIOCSCTTY + dup2) before it execs `jexec`: FreeBSD never
gives a session a controlling terminal on open(2), and `preexec_fn` is unsafe in a threaded
process. This replaces upstream's `kleened_pty` helper, so a missing helper cannot crash an
exec (B22).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from kleened.platform.base import HostCommandError
from kleened.platform.linux.process import PtyStream, RuncProcess
from kleened.platform.posix import hostcmd

TOOLS: Mapping[str, str] = {
    "jail": "/usr/sbin/jail",
    "jexec": "/usr/sbin/jexec",
    "jls": "/usr/sbin/jls",
    "zfs": "/sbin/zfs",
    "ifconfig": "/sbin/ifconfig",
    "route": "/sbin/route",
    "pfctl": "/sbin/pfctl",
    "mount": "/sbin/mount",
    "mount_nullfs": "/sbin/mount_nullfs",
    "umount": "/sbin/umount",
    "sysctl": "/sbin/sysctl",
    "rctl": "/usr/bin/rctl",
    "ps": "/bin/ps",
    "freebsd-update": "/usr/sbin/freebsd-update",
}
DEFAULT_TIMEOUT = hostcmd.DEFAULT_TIMEOUT
LONG_TIMEOUT = 3600.0  # seconds: zfs send/receive of a big image, freebsd-update

# Runs in the child between fork and jexec: make fd 0 (the pty slave) the controlling terminal.
_CTTY_SHIM = "import os,sys;os.login_tty(0);os.execv(sys.argv[1],sys.argv[1:])"


class Commands:
    """Resolves tool names and runs command lines; see the module docstring."""

    def __init__(self, tools: Mapping[str, str] = TOOLS) -> None:
        self.tools = dict(tools)

    @classmethod
    def from_path(cls, path: str | None = None) -> Commands:
        """Tools as found on `path` (default: PATH); a tool that is missing keeps its default path."""
        found = {name: shutil.which(name, path=path) or default for name, default in TOOLS.items()}
        return cls(found)

    def resolve(self, argv: Sequence[str]) -> list[str]:
        if argv[0] not in self.tools:
            raise ValueError(f"unknown host tool '{argv[0]}'")
        return [self.tools[argv[0]], *argv[1:]]

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Run one command line; its stdout, or `HostCommandError` carrying the tool's name."""
        try:
            return await hostcmd.run(self.resolve(argv), input=input, timeout=timeout)
        except HostCommandError as exc:
            raise HostCommandError(argv, exc.returncode, exc.stderr) from None

    def run_now(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """`run`, blocking: only for the synchronous interface methods (stats, `top`)."""
        try:
            return hostcmd.run_sync(self.resolve(argv), timeout=timeout)
        except HostCommandError as exc:
            raise HostCommandError(argv, exc.returncode, exc.stderr) from None

    async def succeeds(self, argv: Sequence[str]) -> bool:
        """True when the command exits 0 (an existence check such as `jls -j <name>`)."""
        try:
            await self.run(argv)
        except HostCommandError:
            return False
        return True

    async def pipe(self, first: Sequence[str], second: Sequence[str], *, timeout: float = LONG_TIMEOUT) -> None:
        """`first | second` as two processes joined by a pipe, never through a shell (B10).

        Both must exit 0; the first failure is raised. On cancellation or timeout both are killed.
        """
        sides = [_Side(list(first)), _Side(list(second))]
        read_end, write_end = os.pipe()
        try:
            with trio.fail_after(timeout):
                async with trio.open_nursery() as nursery:
                    await nursery.start(_run_side, self.resolve(first), sides[0], None, write_end)
                    os.close(write_end)
                    write_end = -1
                    await nursery.start(_run_side, self.resolve(second), sides[1], read_end, None)
                    os.close(read_end)
                    read_end = -1
        except trio.TooSlowError:
            raise HostCommandError(first, -9, f"timed out after {timeout:g} s") from None
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
        for side in sides:
            if side.returncode != 0:
                raise HostCommandError(side.argv, side.returncode or -1, side.errors.decode(errors="replace"))

    async def stream(self, argv: Sequence[str], output: Callable[[str], Awaitable[None]], *,
                     timeout: float = DEFAULT_TIMEOUT) -> None:
        """Run a command whose output a client watches (freebsd-update): stdout and stderr merged,
        relayed line by line; `HostCommandError` (with the last lines) when it fails."""
        tail: list[str] = []
        proc = await trio.lowlevel.open_process(self.resolve(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
        try:
            with trio.fail_after(timeout):
                assert proc.stdout is not None
                async for line in _lines(proc.stdout):
                    tail = [*tail[-4:], line]
                    await output(line)
                await proc.wait()
        except trio.TooSlowError:
            raise HostCommandError(argv, -9, f"timed out after {timeout:g} s") from None
        finally:
            with trio.CancelScope(shield=True):
                await _reap(proc)
        assert proc.returncode is not None
        if proc.returncode != 0:
            raise HostCommandError(argv, _shell_code(proc.returncode), "".join(tail))

    async def spawn(self, argv: Sequence[str], *, tty: bool) -> RuncProcess:
        """Start a long-running command (a `jexec` line) as our child with stdio the caller owns.

        Non-TTY: three pipes, stdout and stderr apart. TTY: a new pty whose slave becomes the
        child's controlling terminal; stdout reads the master, stdin writes to a dup of it.
        """
        args = self.resolve(argv)
        if not tty:
            proc = await trio.lowlevel.open_process(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None
            return RuncProcess(_Child(proc), proc.stdin, proc.stdout, proc.stderr)  # type: ignore[arg-type]
        master, slave = os.openpty()
        try:
            shim = [sys.executable, "-I", "-S", "-c", _CTTY_SHIM, *args]
            proc = await trio.lowlevel.open_process(shim, stdin=slave, stdout=slave, stderr=slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        pty = PtyStream(trio.lowlevel.FdStream(master))
        return RuncProcess(_Child(proc), trio.lowlevel.FdStream(os.dup(master)), pty, None, tty=pty)  # type: ignore[arg-type]


class _Child:
    """A `trio.Process` seen as `RuncProcess` expects its child: exit codes as a shell shows them."""

    def __init__(self, proc: trio.Process) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        code = self._proc.returncode
        return None if code is None else _shell_code(code)

    async def wait(self) -> int:
        return _shell_code(await self._proc.wait())

    def send_signal(self, signum: int) -> None:
        if self._proc.returncode is None:
            self._proc.send_signal(signum)


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    pending = b""
    async for chunk in stream:
        pending += chunk
        *done, pending = pending.split(b"\n")
        for line in done:
            yield line.decode(errors="replace") + "\n"
    if pending:
        yield pending.decode(errors="replace")


def _shell_code(code: int) -> int:
    """subprocess's -N (killed by signal N) as 128+N."""
    return 128 - code if code < 0 else code


@dataclass
class _Side:
    """One process of `Commands.pipe`: its command line, exit code and stderr."""

    argv: list[str]
    returncode: int | None = None
    errors: bytearray = field(default_factory=bytearray)


async def _run_side(args: list[str], side: _Side, stdin: int | None, stdout: int | None, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Start one side, report it started (the caller then closes its copy of the pipe end), wait."""
    proc = await trio.lowlevel.open_process(
        args, stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=subprocess.DEVNULL if stdout is None else stdout, stderr=subprocess.PIPE)
    try:
        task_status.started()
        assert proc.stderr is not None
        async for chunk in proc.stderr:
            side.errors.extend(chunk)
        side.returncode = await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            await _reap(proc)


async def _reap(proc: trio.Process) -> None:
    """Kill (if still running) and wait for a helper process, and close our ends of its pipes."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            await stream.aclose()
