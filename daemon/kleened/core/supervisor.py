"""The supervisor owns every process the daemon starts: container inits and execs.

Each running container has a task in the supervisor's nursery, and each of its processes a task
in the container's own nursery: an exception in one container's supervision is logged and ends
that container only. A process's task pumps its output
into its `Fanout` (and a container's main process's output into the container log too, whose
writer runs as a child of the same task), waits for the exit (the daemon is a child subreaper
and reaps exactly the pids it started), records the exit code and runs the owner's cleanup,
shielded. The container log is written to the end before that cleanup, so the log holds the
last line when the container's `die` event goes out.

Stopping a container is its stop signal (TERM by default) to its init (tini forwards it), a
grace period, then KILL to every process in it; whether a stop is allowed is the container
lifecycle's decision (`core.containers`). A task cancelled anyway (a crash path) still KILLs its
container before it returns, so a cancelled daemon never leaves a container running, unless
the daemon shuts down with live restore (`leave_running`): then the containers run on under
their monitors and the next daemon adopts them (`adopt_container`).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import trio

from .. import faults
from ..platform.base import ContainerSpec, Process, ProcessSpec, Runtime, Sandbox
from .fanout import Fanout, Stream
from .logs import ContainerLog

log = logging.getLogger(__name__)

DRAIN_AFTER_EXIT = 1.0  # seconds: output a lingering grandchild still holds is cut after this
# seconds to read the rest of a process whose output ends with it (a monitor's connection closes
# when the monitor exits): a safety net only, on a loaded host reading it may take over a second.
OUTPUT_END_WAIT = 30.0
DELIVERY_DEADLINE = 5.0  # seconds a chunk already read may wait for the log writer and lossless readers
KILL_WAIT = 5.0  # seconds to wait for a KILLed container to be reaped
TEARDOWN_WAIT = 60.0  # seconds its cleanup may take on top (runc delete, umount)
LOG_DRAIN = 10.0  # seconds the log writer gets to write what is pending once the output ended


@dataclass(eq=False)
class Run:
    """One supervised process: a container's init (`is_init`) or an exec in it."""

    exec_id: str
    container_id: str
    process: Process
    is_init: bool
    fanout: Fanout = field(default_factory=Fanout)
    log: ContainerLog | None = None  # the container log (main processes only)
    # Writers of its stdin (its exec session, attached clients) take turns: a trio stream
    # allows one sender at a time, and a whole frame of input must not be interleaved.
    stdin_lock: trio.Lock = field(default_factory=trio.Lock)
    exited: trio.Event = field(default_factory=trio.Event)  # the process has ended (cleanup may be running)
    done: trio.Event = field(default_factory=trio.Event)  # ... and its cleanup has run
    exit_code: int | None = None
    container_exited: bool = False  # the container was gone when this process ended
    stop_signal: int = signal.SIGTERM  # what stopping the container sends first (the image's STOPSIGNAL)


OnExit = Callable[[Run], Awaitable[None]]
OnCreated = Callable[[Sandbox | None], Awaitable[None]]


class Supervisor:
    def __init__(self, runtime: Runtime, *, grace: float) -> None:
        self._runtime = runtime
        self._grace = grace
        self._nursery: trio.Nursery | None = None
        self._inits: dict[str, Run] = {}
        self._runs: dict[str, Run] = {}
        self._containers: dict[str, trio.Nursery] = {}  # container id -> the nursery of its processes
        self._leaving = False  # `leave_running`: cancellation leaves the containers running
        self._companions: dict[str, list[trio.CancelScope]] = {}  # container id -> its companion tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- queries ---------------------------------------------------------------------------

    def is_running(self, container_id: str) -> bool:
        return container_id in self._inits

    def running_containers(self) -> list[str]:
        return list(self._inits)

    def get(self, exec_id: str) -> Run | None:
        return self._runs.get(exec_id)

    def runs_in(self, container_id: str) -> list[Run]:
        return [r for r in self._runs.values() if r.container_id == container_id]

    def init_run(self, container_id: str) -> Run | None:
        """The running main process of `container_id`, if any."""
        return self._inits.get(container_id)

    # --- starting ----------------------------------------------------------------------------

    async def start_container(self, spec: ContainerSpec, exec_id: str, on_exit: OnExit, *, fanout: Fanout,
                              log: ContainerLog | None = None, on_created: OnCreated | None = None) -> Run:
        """Start a container whose init runs `spec.process`; `fanout` and `log` get its output.
        `on_created` runs between the runtime's create and start with the sandbox the runtime
        made (FreeBSD: the network is plugged into the jail there).

        The container gets a task of its own in the supervisor's nursery, whose nursery holds
        the init and every exec started in the container: a failure in any of them is logged,
        and ends (kills) that container only, never the daemon or other containers.
        """
        assert self._nursery is not None, "supervisor not running"
        sandbox = await self._runtime.create(spec)
        faults.point("container.start.created")
        if on_created is not None:
            await on_created(sandbox)
        process = await self._runtime.start(spec.id)
        return await self._supervise_init(spec.id, process, exec_id, on_exit, fanout=fanout, log=log,
                                          stop_signal=spec.stop_signal)

    async def adopt_container(self, container_id: str, exec_id: str, on_exit: OnExit, *, fanout: Fanout,
                              log: ContainerLog | None = None, stop_signal: int = signal.SIGTERM) -> Run:
        """Supervise a running container a previous daemon started (`Runtime.adopt`), as if
        this one had: its output to `fanout` and `log`, its exit to `on_exit`."""
        assert self._nursery is not None, "supervisor not running"
        process = await self._runtime.adopt(container_id)
        return await self._supervise_init(container_id, process, exec_id, on_exit, fanout=fanout, log=log,
                                          stop_signal=stop_signal)

    async def _supervise_init(self, container_id: str, process: Process, exec_id: str, on_exit: OnExit, *,
                              fanout: Fanout, log: ContainerLog | None, stop_signal: int) -> Run:
        assert self._nursery is not None, "supervisor not running"
        run = Run(exec_id=exec_id, container_id=container_id, process=process, is_init=True, fanout=fanout, log=log,
                  stop_signal=stop_signal)
        self._inits[container_id] = run
        self._runs[exec_id] = run
        await self._nursery.start(self._container_task, run, on_exit)
        return run

    def leave_running(self) -> None:
        """At a live-restore shutdown: end supervision without stopping the containers. Their
        tasks end as the daemon's nursery is cancelled: no kill, no cleanup (the next daemon
        adopts them); execs end with the daemon."""
        self._leaving = True

    async def _container_task(self, init: Run, on_exit: OnExit, *,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        container_id = init.container_id
        nursery: trio.Nursery | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._containers[container_id] = nursery
                task_status.started()
                await self._supervise(init, on_exit)
                del self._containers[container_id]  # no new exec: the ones running end with the container
        except Exception:
            log.exception("supervising the container failed; it was stopped", extra={"container": container_id})
        finally:
            if nursery is not None and self._containers.get(container_id) is nursery:
                del self._containers[container_id]

    async def exec(
        self, container_id: str, spec: ProcessSpec, exec_id: str, on_exit: OnExit, *, fanout: Fanout
    ) -> Run:
        """Start `spec` in the running container; its task lives in the container's nursery."""
        nursery = self._containers.get(container_id)
        if nursery is None or container_id not in self._inits:
            raise RuntimeError(f"container {container_id} is not running")
        process = await self._runtime.exec(container_id, spec)
        run = Run(exec_id=exec_id, container_id=container_id, process=process, is_init=False, fanout=fanout)
        self._runs[exec_id] = run
        nursery.start_soon(self._supervise, run, on_exit)
        return run

    def spawn(self, container_id: str, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run `fn(*args)` beside the running container's processes (its healthcheck monitor), in
        the container's nursery: it is cancelled when the main process ends, before the cleanup
        after the exit runs, so it never outlives the container. Nothing runs if the main process
        has already ended."""
        nursery = self._containers.get(container_id)
        if nursery is None or container_id not in self._inits:
            return
        scope = trio.CancelScope()
        self._companions.setdefault(container_id, []).append(scope)
        nursery.start_soon(self._companion, container_id, scope, fn, *args)

    @staticmethod
    async def _companion(container_id: str, scope: trio.CancelScope, fn: Callable[..., Awaitable[None]],
                         *args: object) -> None:
        with scope:
            try:
                await fn(*args)
            except Exception:
                log.exception("a companion task of the container failed", extra={"container": container_id})

    async def _supervise(self, run: Run, on_exit: OnExit) -> None:
        try:
            async with trio.open_nursery() as writer:
                if run.log is not None:
                    writer.start_soon(run.log.write_until_closed)
                try:
                    await self._pump_until_exit(run)
                finally:
                    if run.log is not None:
                        run.log.close()
                        writer.cancel_scope.deadline = trio.current_time() + LOG_DRAIN
        finally:
            with trio.CancelScope(shield=True):
                run.fanout.close()
                await run.process.aclose()
                if run.is_init:
                    self._inits.pop(run.container_id, None)
                    for scope in self._companions.pop(run.container_id, []):
                        scope.cancel()
                run.container_exited = run.is_init or not self.is_running(run.container_id)
                run.exited.set()
                try:
                    if not (self._leaving and run.is_init and run.exit_code is None):
                        await on_exit(run)
                except Exception:
                    log.exception("cleanup after exit failed", extra={"container": run.container_id})
                self._runs.pop(run.exec_id, None)
                run.done.set()
        if self._leaving and run.is_init and run.exit_code is None:
            log.info("container left running for the next daemon", extra={"container": run.container_id})
        else:
            log.info("process exited", extra={"container": run.container_id, "exec": run.exec_id,
                                              "code": run.exit_code})

    async def _pump_until_exit(self, run: Run) -> None:
        async with trio.open_nursery() as pumps:
            pumps.start_soon(self._pump, run, run.process.stdout, Stream.STDOUT)
            if run.process.stderr is not None:
                pumps.start_soon(self._pump, run, run.process.stderr, Stream.STDERR)
            try:
                run.exit_code = await run.process.wait()
            except trio.Cancelled:
                if not (self._leaving and run.is_init):
                    with trio.CancelScope(shield=True):
                        await self._kill_now(run)
                raise
            ends = getattr(run.process, "output_ends_at_exit", False)
            pumps.cancel_scope.deadline = trio.current_time() + (OUTPUT_END_WAIT if ends else DRAIN_AFTER_EXIT)

    @staticmethod
    async def _pump(run: Run, stream: trio.abc.ReceiveStream, which: Stream) -> None:
        """Output to the log and the readers until the end of the stream.

        Cut by the drain window after the exit (a grandchild may hold the pipe open forever), it
        still delivers what the pipe already holds: on a starved machine the window can close
        before this task has run at all, and output the process wrote before exiting is not
        lost. A chunk read is delivered whole, whatever cancels the pump meanwhile.
        """
        try:
            while chunk := await stream.receive_some(65536):
                await Supervisor._deliver(run, which, chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a pty master reports EIO once the last slave fd closes: that is EOF
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(DELIVERY_DEADLINE):
                for chunk in _held(stream):
                    await Supervisor._deliver(run, which, chunk)
            raise

    @staticmethod
    async def _deliver(run: Run, which: Stream, chunk: bytes) -> None:
        """To the log, then to the readers. `record` and the start of `publish` run with no await
        in between: an attach sees each chunk either in its recent lines or live."""
        with trio.CancelScope(shield=True), trio.move_on_after(DELIVERY_DEADLINE):
            if run.log is not None:
                await run.log.wait_writable()  # waits only while the disk is `buffer` bytes behind
                run.log.record(which, chunk)
            await run.fanout.publish(which, chunk)

    async def _kill_now(self, run: Run) -> None:
        try:
            if run.is_init:
                await self._runtime.kill(run.container_id, signal.SIGKILL, all_processes=True)
            else:
                run.process.signal(signal.SIGKILL)
            with trio.move_on_after(KILL_WAIT):
                run.exit_code = await run.process.wait()
        except Exception:
            log.exception("could not kill a cancelled process", extra={"container": run.container_id})

    # --- stopping ----------------------------------------------------------------------------

    async def signal_container(self, container_id: str, signum: int) -> None:
        """Send `signum` to the container's init (tini forwards it to the main process)."""
        await self._runtime.kill(container_id, signum)

    async def finish_stop(self, run: Run, *, grace: float | None = None) -> bool:
        """After the stop signal: wait up to the grace period, then KILL every process of the
        container. True once its cleanup has run; False if it did not end even after KILL."""
        grace = self._grace if grace is None else grace
        with trio.move_on_after(grace):
            await run.done.wait()
        if not run.done.is_set():
            log.info("container ignored its stop signal, killing", extra={"container": run.container_id})
            if not run.exited.is_set():
                await self._runtime.kill(run.container_id, signal.SIGKILL, all_processes=True)
            with trio.move_on_after(KILL_WAIT + TEARDOWN_WAIT):
                await run.done.wait()
        return run.done.is_set()

    async def stop_exec(self, exec_id: str, *, force: bool) -> None:
        run = self._runs.get(exec_id)
        if run is None:
            return
        run.process.signal(signal.SIGKILL if force else signal.SIGTERM)
        with trio.move_on_after(5):
            await run.done.wait()


def _held(stream: trio.abc.ReceiveStream) -> Iterator[bytes]:
    """What a pipe or pty stream holds right now, read without waiting (trio keeps their fds
    non-blocking). Streams without a file descriptor of their own hold nothing here."""
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return
    try:
        fd = fileno()
    except (OSError, ValueError):
        return
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EAGAIN: empty for now; EIO: a pty whose other side is closed
            return
        if not data:
            return
        yield data
