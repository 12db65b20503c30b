"""Containers that outlive the daemon: each one runs under its own monitor, `conmon`.

conmon (Podman's monitor, a Debian package) owns what must survive a daemon restart or crash:
it runs `runc create`, becomes the subreaper of the container's init and reaps it, holds the
container's stdio (pipes, or the pty master), writes the container log (CRI format, see
`docs/containers.md`), serves the attach socket and the control fifo (`attachsock`), records
an OOM kill, and when the container ends writes its exit code to `<bundle>/exit` (atomically:
a temporary file renamed into place), then exits. The daemon runs `runc start`, signals and
deletes through runc as before.

Vocabulary: a container's *bundle* is RuncRuntime's `<state>/bundles/<id>`; everything of its
monitor lives there too (`MonitorPaths`), so the state root alone is enough to find a running
container again (`find`), and deleting the bundle removes it all. The one thing outside is the
link `<state>/attach/<id>` -> bundle that keeps the attach socket's path short (conmon makes
and removes it).

Processes: conmon forks and its first process exits at once; the monitor proper is reparented
to the nearest subreaper, the daemon, which must reap it (`Monitored.wait`). A monitor found
again after a restart is no child of ours (it was reparented to init); it is watched through a
pidfd, and its exit code comes from the exit file either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import trio

from kleened.platform.base import ContainerSpec, HostCommandError
from kleened.platform.linux import reaper
from kleened.platform.linux.attachsock import REOPEN_LOG_COMMAND, AttachConnection, resize_command, send_control
from kleened.platform.linux.monitorspec import CONMON_ENV, MonitorOptions, MonitorPaths, conmon_argv
from kleened.platform.linux.runc import START_TIMEOUT, RuncRuntime, _read_pid, _runc_error  # same driver family
from kleened.platform.posix import hostcmd

log = logging.getLogger(__name__)

EXIT_WAIT = 10.0  # seconds for a killed container's monitor to write its exit file and exit
_UNIX_PATH_MAX = 107
_ID_MAX = 32  # container ids up to this long get attach socket paths that fit (kleened's have 12)


@dataclass(frozen=True)
class ExitStatus:
    code: int  # as a shell shows it: 128+N for signal N
    oom: bool  # the kernel's OOM killer killed a process of the container


class MonitorGone(Exception):
    """The monitor ended without writing an exit status: the container's fate is unknown."""


@dataclass(frozen=True)
class MonitorRecord:
    """A container with a monitor, as its files describe it: what a scan of the state root
    finds. Holds no fd; `ConmonMonitors.adopt` turns it into a watched `Monitored`."""

    container_id: str
    paths: MonitorPaths
    options: MonitorOptions
    init_pid: int | None  # None: the create did not get that far
    monitor_pid: int | None

    @property
    def monitor_alive(self) -> bool:
        """Whether the monitor still runs (a zombie waiting to be reaped does not)."""
        return self.monitor_pid is not None and _is_monitor_of(self.monitor_pid, self.paths.bundle)

    def exit_status(self) -> ExitStatus | None:
        """The exit status the monitor wrote, or None (still running, or the monitor is gone)."""
        try:
            code = int(self.paths.exit_file.read_text().strip())
        except FileNotFoundError:
            return None
        return ExitStatus(code=code, oom=self.paths.oom_file.exists())


class Monitored:
    """A container under its monitor, watched: started now, or adopted after a restart.

    Holds a pidfd on the monitor until `wait` returned or `close`. `wait` has one caller at a
    time (the container's supervising task).
    """

    def __init__(self, record: MonitorRecord) -> None:
        self.record = record
        self.container_id = record.container_id
        self.paths = record.paths
        self.options = record.options
        self.init_pid = record.init_pid
        self.monitor_pid = record.monitor_pid
        self.exit_status = record.exit_status
        self._child: reaper.Child | None = None  # the monitor, when it is our child
        self._pidfd: int | None = None  # the monitor, when it is not
        pid = record.monitor_pid
        if pid is None:
            return
        if _parent_of(pid) == os.getpid():
            # Ours to reap, also as a zombie (whose cmdline is empty): the daemon started it,
            # or a daemon that died was our child and it was reparented to us.
            self._child = reaper.Child(pid)
        elif record.monitor_alive:
            with contextlib.suppress(ProcessLookupError):
                self._pidfd = os.pidfd_open(pid)
            if not record.monitor_alive:  # it ended meanwhile (or the pid is another's now)
                self.close()

    @property
    def monitor_running(self) -> bool:
        return (self._child is not None and self._child.returncode is None) or self._pidfd is not None

    async def wait(self) -> ExitStatus:
        """Wait until the monitor has ended (reaping it when it is our child); return the exit
        status it wrote. Raises MonitorGone when it ended without writing one.

        Cancellation leaves everything as it was: waiting again is fine.
        """
        if self._child is not None:
            await self._child.wait()
        elif self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
            self.close()
        status = self.exit_status()
        if status is None:
            raise MonitorGone(f"the monitor of container {self.container_id} ended without its exit status")
        return status

    async def attach(self) -> AttachConnection:
        return await AttachConnection.connect(self.paths.attach)

    def resize(self, rows: int, cols: int) -> bool:
        """Set the TTY's size; False when the monitor is gone (or there is no TTY)."""
        return self.options.tty and send_control(self.paths.ctl, resize_command(rows, cols))

    def reopen_log(self) -> bool:
        """Make the monitor start a new, empty log file at `options.log_path` (after the daemon
        renamed the current one away: rotation); False when the monitor is gone."""
        return send_control(self.paths.ctl, REOPEN_LOG_COMMAND)

    def close(self) -> None:
        """Stop watching the monitor (it runs on); a monitor that is our child is then reaped
        by nobody, so only call this once `wait` returned or at daemon exit."""
        if self._child is not None:
            self._child.close()
            self._child = None
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


class ConmonMonitors:
    """Starts, finds and deletes containers that run under conmon, on a `RuncRuntime`'s state."""

    def __init__(self, runtime: RuncRuntime, conmon: str = "conmon") -> None:
        self.runtime = runtime
        self.conmon = shutil.which(conmon) or conmon
        self.runc = shutil.which(runtime._argv()[0]) or runtime._argv()[0]
        self.attach_dir = runtime.state_dir / "attach"
        if len(os.fsencode(self.paths("x" * _ID_MAX).attach)) > _UNIX_PATH_MAX:
            raise ValueError(f"state dir {runtime.state_dir} is too long for attach socket paths")
        self.attach_dir.mkdir(mode=0o700, exist_ok=True)

    def paths(self, container_id: str) -> MonitorPaths:
        bundle = self.runtime.bundles / container_id
        return MonitorPaths(bundle=bundle, attach_link=self.attach_dir / container_id)

    async def create(self, spec: ContainerSpec, options: MonitorOptions) -> Monitored:
        """Write the bundle and run conmon, which runs `runc create`: the container exists, its
        init waits for `start`. Attach before `start` to see its first output.

        Cancellation waits for the create to finish (tens of ms), then undoes it; on failure
        or cancellation the container, its monitor and its bundle are gone.
        """
        paths = self.paths(spec.id)
        if len(os.fsencode(paths.attach)) > _UNIX_PATH_MAX:
            raise ValueError(f"container id '{spec.id}' is too long for its attach socket path")
        bdir = self.runtime.make_bundle_dir(spec.id)  # FileExistsError: a stale bundle; delete() first
        monitored: Monitored | None = None
        try:
            self.runtime.write_bundle(spec, bdir)
            _write_private(paths.options, options.to_json())  # before the monitor: find() needs it
            argv = conmon_argv(self.conmon, self.runc, self.runtime.runc_root, spec.id, paths, options)
            with trio.CancelScope(shield=True):
                init_pid, message = await self._launch(argv, bdir)
                monitored = Monitored(self._record(spec.id, paths, options))
            if init_pid < 0:
                raise _runc_error(HostCommandError([self.runc, "create"], 1, message), paths.runc_log, 0)
            await trio.lowlevel.checkpoint()  # a cancel that came meanwhile lands here, undoable
            return monitored
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(EXIT_WAIT + 30):
                await self.delete(spec.id, monitored)
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self.runtime.security.unmount_views(bdir)  # the created container holds its copies

    async def _launch(self, argv: list[str], bundle: Path) -> tuple[int, str]:
        """Run conmon; return the container's init pid from its sync pipe, or -1 and conmon's
        message when the create failed."""
        read_end, write_end = os.pipe()
        try:
            with open(os.devnull, "rb") as null:
                env = {**CONMON_ENV, "_OCI_SYNCPIPE": str(write_end)}
                # cwd: conmon 2.1 also writes its `oom` file relative to its working directory.
                await hostcmd.run(argv, env=env, pass_fds=(write_end,), stdin=null.fileno(), stdout=null.fileno(),
                                  cwd=bundle)
            os.close(write_end)
            write_end = -1
            with trio.fail_after(START_TIMEOUT):
                line = await _read_line(read_end)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        try:
            reply = json.loads(line)
            pid = int(reply["data"])
        except (ValueError, KeyError, TypeError):
            raise HostCommandError(argv, 1, f"the monitor did not report the container: {line!r}") from None
        return pid, str(reply.get("message", "")).strip()

    @staticmethod
    def _record(container_id: str, paths: MonitorPaths, options: MonitorOptions) -> MonitorRecord:
        return MonitorRecord(container_id, paths, options, _read_pid_or_none(paths.init_pid),
                             _read_pid_or_none(paths.monitor_pid))  # fmt: skip

    @staticmethod
    def adopt(record: MonitorRecord) -> Monitored:
        """Watch a found container's monitor (a pidfd, or reaping it when it is our child)."""
        return Monitored(record)

    async def start(self, monitored: Monitored) -> None:
        """`runc start`: the container's process runs. On failure the caller deletes it."""
        argv = self.runtime._argv("start", monitored.container_id, log_file=monitored.paths.runc_log)
        offset = _size(monitored.paths.runc_log)
        try:
            await hostcmd.run(argv, timeout=START_TIMEOUT)
        except HostCommandError as e:
            raise _runc_error(e, monitored.paths.runc_log, offset) from None

    def find(self, container_id: str) -> MonitorRecord | None:
        """The container as its files describe it, or None when it has no monitor."""
        paths = self.paths(container_id)
        try:
            options = MonitorOptions.from_json(paths.options.read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, KeyError, TypeError) as e:
            log.warning("unreadable monitor options: %s", e, extra={"container": container_id})
            return None
        return self._record(container_id, paths, options)

    def find_all(self) -> dict[str, MonitorRecord]:
        """Every container with a monitor under the state root, running or ended: what a
        restarted daemon re-adopts (it reads only files and /proc, no runc call per container)."""
        found = {}
        for entry in sorted(os.listdir(self.runtime.bundles)):
            monitored = self.find(entry)
            if monitored is not None:
                found[entry] = monitored
        return found

    async def delete(self, container_id: str, monitored: Monitored | None = None) -> None:
        """Idempotent: kill the container if it runs, wait for its monitor to end (reaping it
        when it is ours), then delete the runtime state, bundle, cgroups and attach link."""
        if monitored is None:
            record = self.find(container_id)
            monitored = self.adopt(record) if record is not None else None
        await self._undo(container_id, monitored)

    async def _undo(self, container_id: str, monitored: Monitored | None) -> None:
        if monitored is not None and monitored.monitor_running:
            with contextlib.suppress(HostCommandError):
                await self.runtime.kill(container_id, signal.SIGKILL, all_processes=True)
            with trio.move_on_after(EXIT_WAIT):
                with contextlib.suppress(MonitorGone):
                    await monitored.wait()
            if monitored.monitor_running:
                log.warning("the monitor did not end after its container was killed",
                            extra={"container": container_id, "pid": monitored.monitor_pid})
        if monitored is not None:
            monitored.close()
        await self.runtime.delete(container_id)
        self.paths(container_id).attach_link.unlink(missing_ok=True)


async def _read_line(fd: int) -> bytes:
    """The first line conmon writes to the sync pipe (it keeps the pipe open afterwards)."""
    data = b""
    while not data.endswith(b"\n"):
        await trio.lowlevel.wait_readable(fd)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _read_pid_or_none(path: Path) -> int | None:
    try:
        return _read_pid(path)
    except (FileNotFoundError, ValueError):
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _is_monitor_of(pid: int, bundle: Path) -> bool:
    """Whether `pid` is the conmon of `bundle` (and not a process that got a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    wanted = os.fsencode(bundle)
    return any(argv[i] in (b"--bundle", b"-b") and argv[i + 1] == wanted for i in range(len(argv) - 1))


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rpartition(")")[2].split()[1])
