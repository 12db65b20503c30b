"""`Runtime` on runc with a conmon monitor per container: containers that outlive the daemon.

A container's init runs under its monitor (`conmon.ConmonMonitors`), which holds its stdio,
writes its log, reaps it and records its exit status; the daemon watches it through one attach
connection (the *tap*: output in, stdin out) and the monitor's pidfd. `create` is conmon plus
`runc create` (the network namespace, mounts and limits in place), `start` is `runc start`,
after the tap is connected so no output is missed. A daemon that stops or dies leaves the
monitors running; the next one finds them (`find_containers`, files only) and `adopt`s them.

Execs stay children of the daemon (`RuncRuntime.exec`, pipes): they end with it (see
docs/containers.md). Everything else (kill, exec, limits, usage) is `RuncRuntime`'s.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Collection, Sequence

import trio

from kleened.platform.base import ContainerSpec, FoundContainer, Limits, ProcessInfo, ProcessSpec, Usage
from kleened.platform.linux import reaper
from kleened.platform.linux.attachsock import STDERR, STDOUT, AttachConnection
from kleened.platform.linux.conmon import ConmonMonitors, Monitored, MonitorGone, MonitorRecord
from kleened.platform.linux.monitorspec import MonitorOptions
from kleened.platform.linux.process import RuncProcess
from kleened.platform.linux.runc import RuncRuntime

log = logging.getLogger(__name__)

MONITOR_GONE = -1  # the exit code recorded when the monitor ended without writing one
# conmon's own log cap counts bytes from the monitor's start, and a reopen (the daemon's
# rotation) does not reset it: at the cap it replaces the live file with an empty one, losing
# what the daemon was still to rotate. So there is none; the daemon rotates (docs/containers.md).
NO_LOG_CAP = -1


class _Tap:
    """The daemon's attach connection to one container, read by a pump per stream: a packet of
    the other stream waits in its queue until that pump asks (one reader at a time)."""

    def __init__(self, connection: AttachConnection | None) -> None:
        self.connection = connection
        self._queues: dict[int, collections.deque[bytes]] = {STDOUT: collections.deque(), STDERR: collections.deque()}
        self._reading = trio.Lock()
        self._arrived = trio.lowlevel.ParkingLot()
        self.ended = connection is None

    async def receive(self, stream: int) -> bytes:
        """The next output of `stream`; b"" once the monitor closed the connection."""
        queue = self._queues[stream]
        while True:
            if queue:
                return queue.popleft()
            if self.ended:
                return b""
            if self._reading.locked():
                await self._arrived.park()
                continue
            try:
                async with self._reading:
                    assert self.connection is not None
                    packet = await self.connection.receive()
            finally:
                self._arrived.unpark_all()  # the woken run after this task's next await: the packet is queued
            if packet is None:
                self.ended = True
            else:
                self._queues[packet[0]].append(packet[1])

    def close(self) -> None:
        self.ended = True
        if self.connection is not None:
            self.connection.close()
        self._arrived.unpark_all()


class _Output(trio.abc.ReceiveStream):
    def __init__(self, tap: _Tap, stream: int) -> None:
        self._tap = tap
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._tap.receive(self._stream)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _Input(trio.abc.SendStream):
    def __init__(self, tap: _Tap) -> None:
        self._tap = tap

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._tap.connection is None or self._tap.ended:
            raise trio.BrokenResourceError("the container's monitor is gone")
        await self._tap.connection.send(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # the container's stdin stays open (--leave-stdin-open)


class MonitoredProcess:
    """A container's init under its monitor, as the daemon sees it (implements `base.Process`).

    `wait()` is the exit status the monitor wrote (MONITOR_GONE when it ended without one);
    `aclose()` closes the tap only: the container and its monitor run on.
    """

    output_ends_at_exit = True  # the monitor's connection closes when it exits

    def __init__(self, monitored: Monitored, connection: AttachConnection | None) -> None:
        self.monitored = monitored
        self.pid = monitored.init_pid or 0
        self._tap = _Tap(connection)
        self.stdin: trio.abc.SendStream | None = _Input(self._tap)
        self.stdout: trio.abc.ReceiveStream = _Output(self._tap, STDOUT)
        self.stderr: trio.abc.ReceiveStream | None = None if monitored.options.tty else _Output(self._tap, STDERR)

    async def wait(self) -> int:
        try:
            status = await self.monitored.wait()
        except MonitorGone as exc:
            log.warning("%s", exc, extra={"container": self.monitored.container_id})
            return MONITOR_GONE
        return status.code

    def resize(self, rows: int, cols: int) -> None:
        self.monitored.resize(rows, cols)

    def signal(self, signum: int) -> None:
        if self.monitored.monitor_running and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def aclose(self) -> None:
        self._tap.close()
        await trio.lowlevel.checkpoint()


class MonitoredRuntime:
    """`Runtime` on runc and conmon; see the module docstring."""

    name = "runc"
    writes_logs = True  # conmon writes the container log: core only keeps its recent lines

    def __init__(self, runc: RuncRuntime, conmon: str = "conmon") -> None:
        self.runc = runc
        self.monitors = ConmonMonitors(runc, conmon)
        self._watched: dict[str, Monitored] = {}  # created or adopted, until delete
        self._found: dict[str, MonitorRecord] = {}  # the last `find_containers`, until adopted

    # --- the container's life -------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> None:
        """conmon and `runc create`: the container exists, its init waits for `start`.
        On failure or cancellation nothing of it is left (see `ConmonMonitors.create`)."""
        if not reaper.is_subreaper():
            raise RuntimeError("the daemon must call reaper.become_subreaper() before starting containers")
        log_path = spec.log_path or self.runc.bundles / f"{spec.id}.log"
        options = MonitorOptions(log_path=log_path, log_size_max=NO_LOG_CAP, tty=spec.process.tty)
        self._watched[spec.id] = await self.monitors.create(spec, options)

    async def start(self, container_id: str) -> MonitoredProcess:
        """Connect the tap, then `runc start`. On failure the caller deletes the container."""
        monitored = self._watched[container_id]
        connection = await monitored.attach()
        try:
            await self.monitors.start(monitored)
        except BaseException:
            connection.close()
            raise
        return MonitoredProcess(monitored, connection)

    def find_containers(self) -> dict[str, FoundContainer]:
        found = {}
        self._found = self.monitors.find_all()  # `adopt` takes its record from here (no second read)
        for container_id, record in self._found.items():
            status = record.exit_status()
            finished = None
            if status is not None:
                with contextlib.suppress(FileNotFoundError):
                    finished = record.paths.exit_file.stat().st_mtime
            found[container_id] = FoundContainer(
                id=container_id, running=record.monitor_alive, exit_code=status.code if status else None,
                oom=bool(status and status.oom), finished_at=finished, tty=record.options.tty)
        return found

    async def adopt(self, container_id: str) -> MonitoredProcess:
        """Watch a container a previous daemon started. LookupError when it has no monitor.

        A monitor that ends meanwhile is no error: the process then ends at once, with the
        exit status the monitor wrote.
        """
        record = self._found.pop(container_id, None) or self.monitors.find(container_id)
        if record is None:
            raise LookupError(f"container {container_id} has no monitor")
        monitored = self.monitors.adopt(record)
        self._watched[container_id] = monitored
        connection = None
        try:
            connection = await monitored.attach()
        except OSError as exc:
            log.info("could not attach to an adopted container: %s", exc, extra={"container": container_id})
        return MonitoredProcess(monitored, connection)

    def reopen_log(self, container_id: str) -> bool:
        monitored = self._watched.get(container_id)
        return monitored is not None and monitored.reopen_log()

    async def delete(self, container_id: str) -> None:
        """Idempotent: kill it if it runs, wait for its monitor, delete runtime state and bundle."""
        await self.monitors.delete(container_id, self._watched.pop(container_id, None))

    async def cleanup(self, keep: Collection[str] = ()) -> None:
        await self.runc.cleanup(keep)
        attach_dir = self.monitors.attach_dir
        for entry in attach_dir.iterdir() if attach_dir.is_dir() else []:
            if entry.name not in keep:
                entry.unlink(missing_ok=True)

    # --- the rest is runc's -----------------------------------------------------------------------

    def version(self) -> str:
        return self.runc.version()

    def check_params(self, params: Sequence[str]) -> dict[str, str]:
        return self.runc.check_params(params)

    def check_seccomp(self, profile: str) -> str:
        return self.runc.check_seccomp(profile)

    def check_userns(self) -> None:
        self.runc.check_userns()

    async def exec(self, container_id: str, process: ProcessSpec) -> RuncProcess:
        return await self.runc.exec(container_id, process)

    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        await self.runc.kill(container_id, signum, all_processes=all_processes)

    async def list_containers(self) -> dict[str, str]:
        return await self.runc.list_containers()

    async def close(self) -> None:
        await self.runc.close()

    def process_count(self, container_id: str) -> int:
        return self.runc.process_count(container_id)

    async def update_limits(self, container_id: str, limits: Limits) -> None:
        await self.runc.update_limits(container_id, limits)

    def oom_kills(self, container_id: str) -> int:
        return self.runc.oom_kills(container_id)

    def usage(self, container_id: str, pid: int) -> Usage | None:
        return self.runc.usage(container_id, pid)

    def processes(self, container_id: str) -> list[ProcessInfo]:
        return self.runc.processes(container_id)

