"""Child-subreaper status and exact-pid reaping for detached container processes.

runc runs containers detached: `runc run -d` / `runc exec -d` exit once the process started,
and the kernel reparents the process to the nearest subreaper. The daemon makes itself that
subreaper at start (`become_subreaper`) so that every container init and exec is its child and
`waitpid(pid)` gives the real exit code.

Never `waitpid(-1)`: trio reaps its own children (runc, mount, ...) by pid, and a catch-all
reaper would steal their statuses (trio then reports exit code 0). We reap exactly the pids
runc wrote to `--pid-file`.

One kind of orphan nobody waits for: when `runc run`/`runc exec` fails half-way, its
intermediate processes (`runc:[0:PARENT]`, `runc:[1:CHILD]`) can outlive it and, being our
descendants, become our children; their zombies would stay until the daemon exits.
`reap_orphans` sweeps on every SIGCHLD and reaps zombie children whose name is runc's
intermediate one and that no `Child` waits for. The name test is what keeps it exact: trio's
own children are `runc` (or `mount`, ...), never `runc:[`, so it never steals their statuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from pathlib import Path

import trio

log = logging.getLogger(__name__)
_waited: set[int] = set()  # pids a `Child` will reap
ORPHAN_PREFIX = "runc:["  # the comm of runc's intermediate processes

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (call once at daemon start)."""
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    if _libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_GET_CHILD_SUBREAPER): {os.strerror(err)}")
    return bool(value.value)


def exit_code(status: int) -> int:
    """A wait status as a shell shows it: the exit code, or 128+N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Child:
    """One reparented process, held by a pidfd so signals never hit a recycled pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        _waited.add(pid)
        self._pidfd: int | None = os.pidfd_open(pid)
        self.returncode: int | None = None
        self._attempt: trio.Event | None = None  # set when the task now waiting returns

    async def wait(self) -> int:
        """Wait for exit and reap; safe to call from several tasks and again after exit.

        One task waits on the pidfd (trio allows one reader per fd); the others wait for it.
        Cancelling any waiter leaves the process unreaped and waitable again.
        """
        while self.returncode is None:
            if self._attempt is not None:
                await self._attempt.wait()
                continue
            self._attempt = trio.Event()
            try:
                assert self._pidfd is not None
                await trio.lowlevel.wait_readable(self._pidfd)
                try:
                    _, status = os.waitpid(self.pid, 0)  # readable pidfd: returns at once
                except ChildProcessError:
                    raise RuntimeError(f"pid {self.pid} is not our child; is the daemon a subreaper?") from None
                self.returncode = exit_code(status)
                _waited.discard(self.pid)
                self._close()
            finally:
                if self._attempt is not None:
                    self._attempt.set()
                    self._attempt = None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal the process; a no-op once it has been reaped."""
        if self._pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped: nothing to signal
            signal.pidfd_send_signal(self._pidfd, signum)

    def close(self) -> None:
        """Give up the pidfd without reaping (the process is someone else's business now)."""
        _waited.discard(self.pid)
        self._close()

    def _close(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


def children() -> list[int]:
    """The pids of this process's children (every thread's)."""
    found: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def _zombie_name(pid: int) -> str | None:
    """The comm of `pid` if it is a zombie, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm, _, rest = stat.partition("(")[2].rpartition(")")
    return comm if rest.split()[:1] == ["Z"] else None


def sweep() -> list[int]:
    """Reap the zombies of runc's intermediate processes that no `Child` waits for."""
    reaped = []
    for pid in children():
        if pid in _waited:
            continue
        name = _zombie_name(pid)
        if name is not None and name.startswith(ORPHAN_PREFIX):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
    if reaped:
        log.debug("reaped orphaned runtime processes", extra={"pids": reaped})
    return reaped


async def reap_orphans(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Sweep at start and on every SIGCHLD, for the daemon's lifetime."""
    with trio.open_signal_receiver(signal.SIGCHLD) as signals:
        task_status.started()
        sweep()
        async for _ in signals:
            sweep()
