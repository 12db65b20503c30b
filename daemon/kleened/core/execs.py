"""Execution instances: a process to run in a container, created first and started once; and
attachments to a running container's main process.

Starting an instance either execs it in the running container or, with `start_container`,
starts the container with it as the main process (as upstream). The instance is forgotten when
its process has exited or it has been stopped. Events: `exec start`/`exec die` for processes
started in a running container (a container's main process is `container start`/`die`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import trio

from kleene_protocol.ids import new_id
from kleene_protocol.models import ExecConfig

from .attach import DEFAULT_DETACH_KEYS, Attachment, DetachFilter, parse_detach_keys
from .containers import Containers
from .environment import validate_env
from .errors import Conflict, InvalidArgument, NotFound
from .events import Events
from .fanout import Chunk, Fanout
from .supervisor import Run, Supervisor

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ExecInstance:
    """An execution instance: created, then started exactly once (`started` goes true with no
    await after the check, so two racing starts cannot both pass it)."""

    id: str
    container_id: str
    cmd: list[str]
    user: str
    env: list[str]
    tty: bool
    started: bool = False
    run: Run | None = None


@dataclass(eq=False)
class Session:
    """A started instance, as its starter sees it."""

    instance: ExecInstance
    run: Run
    output: trio.MemoryReceiveChannel[Chunk] | None = field(default=None)

    async def write_stdin(self, data: bytes) -> None:
        stdin = self.run.process.stdin
        if stdin is None:
            return
        # The process may have closed its stdin or exited: input then has nowhere to go.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async with self.run.stdin_lock:
                await stdin.send_all(data)

    def resize(self, rows: int, cols: int) -> None:
        self.run.process.resize(rows, cols)

    def closing_message(self) -> str:
        code = self.run.exit_code if self.run.exit_code is not None else -1
        if self.run.container_exited:
            return f"executable {self.instance.id} and its container exited with exit-code {code}"
        return f"{self.instance.id} has exited with exit-code {code}"


class Execs:
    def __init__(self, containers: Containers, supervisor: Supervisor, *, events: Events | None = None,
                 detach_keys: str = DEFAULT_DETACH_KEYS, attach_buffer: int = 4 * 2**20) -> None:
        self._containers = containers
        self._supervisor = supervisor
        self._instances: dict[str, ExecInstance] = {}
        containers.removal_hooks.append(self._forget_container)
        self._events = events if events is not None else Events()
        self._detach_keys = parse_detach_keys(detach_keys)
        self._attach_buffer = attach_buffer  # bytes an attached client may fall behind before it is dropped

    def create(self, config: ExecConfig) -> ExecInstance:
        record = self._containers.get(config.container_id)
        if error := validate_env(config.env):
            raise InvalidArgument(error)
        instance = ExecInstance(id=new_id(), container_id=record.id, cmd=list(config.cmd), user=config.user,
                                env=list(config.env), tty=config.tty)
        self._instances[instance.id] = instance
        return instance

    def _forget_container(self, container_id: str) -> None:
        """The container was removed: its instances (started or not) go with it."""
        for exec_id in [i.id for i in self._instances.values() if i.container_id == container_id]:
            del self._instances[exec_id]

    def _get(self, exec_id: str) -> ExecInstance:
        instance = self._instances.get(exec_id)
        if instance is not None and instance.run is not None and instance.run.done.is_set():
            del self._instances[exec_id]  # its process has exited: the instance is gone
            instance = None
        if instance is None:
            raise NotFound(f"could not find execution instance matching '{exec_id}'")
        return instance

    async def start(self, exec_id: str, *, attach: bool, start_container: bool) -> Session:
        """Start the instance; with `attach` the session's `output` gets every chunk.

        An instance starts once: a second start, even while the first is still starting, is
        refused with upstream's "executable already started". A start that fails leaves the
        instance startable again.
        """
        instance = self._get(exec_id)
        if instance.started:
            raise Conflict("executable already started")
        instance.started = True
        fanout = Fanout()
        output = fanout.subscribe(lossless=True) if attach else None
        try:
            run = await self._containers.run_process(
                instance.container_id, exec_id=exec_id, cmd=instance.cmd, user=instance.user, env=instance.env,
                tty=instance.tty, fanout=fanout, start_container=start_container, on_exec_exit=self._forget)
        except BaseException:
            instance.started = False
            if output is not None:
                output.close()
            raise
        instance.run = run
        if not run.is_init:
            self._events.publish("exec", "start", exec_id, container=instance.container_id)
        return Session(instance=instance, run=run, output=output)

    async def _forget(self, run: Run) -> None:
        self._instances.pop(run.exec_id, None)
        self._events.publish("exec", "die", run.exec_id, container=run.container_id, exit_code=run.exit_code)

    async def stop(self, exec_id: str, *, force: bool, stop_container: bool) -> None:
        instance = self._get(exec_id)
        if instance.run is None:
            raise NotFound("execution instance have not been started")
        if stop_container:
            with trio.move_on_after(5) as scope:
                with contextlib.suppress(NotFound):  # it stopped meanwhile
                    await self._containers.stop(instance.container_id)
            if scope.cancelled_caught:
                raise NotFound("timed out while waiting for jail to stop")
        else:
            await self._supervisor.stop_exec(exec_id, force=force)
        self._instances.pop(exec_id, None)

    def attach(self, ident: str, *, recent_lines: int, stdin: bool, detach_keys: str) -> Attachment:
        """Attach to the running main process of container `ident`.

        The recent lines and the live subscription are taken together, with no await in
        between, so the client sees each chunk once and misses none.
        """
        record = self._containers.get(ident)
        run = self._supervisor.init_run(record.id)
        if run is None or run.done.is_set():
            raise Conflict(f"container {record.id} is not running")
        keys = parse_detach_keys(detach_keys) if detach_keys else self._detach_keys
        recent = run.log.recent_lines(recent_lines) if run.log is not None else []
        output = run.fanout.subscribe_lossy(self._attach_buffer)
        self._events.publish("container", "attach", record.id, name=record.name)
        return Attachment(container_id=record.id, run=run, recent=recent, output=output, stdin=stdin,
                          detach=DetachFilter(keys))

    def detach(self, attachment: Attachment, reason: str) -> None:
        """The attachment ended (`reason`: exited, detached, dropped, disconnected)."""
        attachment.run.fanout.unsubscribe(attachment.output)
        self._events.publish("container", "detach", attachment.container_id, reason=reason)

    async def interrupt(self, session: Session) -> None:
        """The attached client went away: stop its process (not its container, unless that
        process is the container's main process)."""
        if not session.run.done.is_set():
            await self._supervisor.stop_exec(session.run.exec_id, force=False)
