"""Healthchecks: the check in force for a container, its probes, and the health they report.

A container's check is its image's `HEALTHCHECK` with the create's `healthcheck` over it (field
by field; `["NONE"]` disables it), fixed at create. While the container runs, a monitor task in
the container's own nursery (`Supervisor.spawn`) runs one probe at a time as an exec: first
after `interval` (`start_interval` during the start period), each probe given `timeout`, then
killed. Docker's rules: exit 0 is healthy; a failure during the start period does not count; a
failing streak of `retries` makes it unhealthy; one success makes it healthy again. The monitor
ends when the main process does (the supervisor cancels it before the teardown), so a probe
never outlives its container. Each change of status is a `health_status` event.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from kleene_protocol.durations import MAXIMUM, MINIMUM
from kleene_protocol.ids import new_id
from kleene_protocol.models import Health, HealthcheckConfig, HealthConfig, HealthResult, HealthStatus

from .clock import now_iso
from .errors import Conflict, ExecFailed, InvalidArgument, KleeneError
from .fanout import Chunk, Fanout
from .supervisor import Run

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 4096  # bytes of a probe's output kept (Docker's)
LOG_LENGTH = 5  # probes kept in the log (Docker's)
DEFAULT_SHELL = ["/bin/sh", "-c"]


def effective(image: HealthConfig | None, override: HealthcheckConfig | None) -> HealthConfig | None:
    """The check a container gets, or None (no check, or `NONE`). InvalidArgument for a bad override.

    As Docker: an override field that is null, 0 or empty keeps the image's value, and a value
    that is still 0 (an image's) is the default.
    """
    if override is not None:
        _validate(override)
    base = image if image is not None else HealthConfig()
    merged = HealthConfig(**{f: getattr(base, f) for f in HealthConfig.__struct_fields__})
    if override is not None:
        for name in HealthConfig.__struct_fields__:
            value = getattr(override, name)
            if value:
                setattr(merged, name, list(value) if name == "test" else value)
    if not merged.test or merged.test[0] == "NONE":
        return None
    defaults = HealthConfig()
    for name in ("interval", "timeout", "start_interval", "retries"):
        if getattr(merged, name) <= 0:
            setattr(merged, name, getattr(defaults, name))
    return merged


def _validate(override: HealthcheckConfig) -> None:
    test = override.test
    if test is not None and test:
        kind = test[0]
        if kind not in ("CMD", "CMD-SHELL", "NONE"):
            raise InvalidArgument(f"invalid healthcheck test '{kind[:32]}': use CMD, CMD-SHELL or NONE")
        if kind == "NONE" and len(test) > 1:
            raise InvalidArgument("healthcheck NONE takes no command")
        if kind == "CMD-SHELL" and (len(test) != 2 or not test[1].strip()):
            raise InvalidArgument("healthcheck CMD-SHELL takes one command string")
        if kind == "CMD" and len(test) < 2:
            raise InvalidArgument("healthcheck CMD requires a command")
    for name in ("interval", "timeout", "start_period", "start_interval"):
        value = getattr(override, name)
        if value is not None and (value < 0 or 0 < value < MINIMUM or value > MAXIMUM):
            raise InvalidArgument(f"healthcheck {name.replace('_', '-')} must be 0 or between 1ms and a year")
    if override.retries is not None and not 0 <= override.retries <= 1_000_000:
        raise InvalidArgument("healthcheck retries must be between 0 and 1000000")


def probe_argv(check: HealthConfig, shell: list[str]) -> list[str]:
    """The probe's command: `CMD` runs as is, `CMD-SHELL` through the image's shell."""
    if check.test[0] == "CMD-SHELL":
        return [*(shell or DEFAULT_SHELL), check.test[1]]
    return list(check.test[1:])


@dataclass
class HealthState:
    """What the probes have said so far (Docker's state machine)."""

    status: HealthStatus = "starting"
    failing_streak: int = 0
    log: collections.deque[HealthResult] = field(default_factory=lambda: collections.deque(maxlen=LOG_LENGTH))

    def record(self, result: HealthResult, *, retries: int, in_start_period: bool) -> bool:
        """Take one probe's result; True if the status changed."""
        before = self.status
        self.log.append(result)
        if result.exit_code == 0:
            self.status, self.failing_streak = "healthy", 0
        elif not in_start_period:
            self.failing_streak += 1
            if self.failing_streak >= max(retries, 1):
                self.status = "unhealthy"
        return self.status != before

    def to_api(self) -> Health:
        return Health(status=self.status, failing_streak=self.failing_streak, log=list(self.log))


# Run `argv` as an exec in the running container; return (exit code, output). Raises Conflict if it no longer runs.
Probe = Callable[[str, list[str], float], Awaitable[tuple[int, str]]]
Publish = Callable[[str, HealthStatus], None]


class Healthchecks:
    """The health of every container that has a check (in memory: a daemon start begins afresh)."""

    def __init__(self, probe: Probe, publish: Publish) -> None:
        self._probe = probe
        self._publish = publish
        self._states: dict[str, HealthState] = {}

    def get(self, container_id: str) -> Health | None:
        state = self._states.get(container_id)
        return state.to_api() if state is not None else None

    def begin(self, container_id: str) -> None:
        """A run with a check starts: its health is `starting` from now on (before its monitor runs)."""
        self._states[container_id] = HealthState()

    def forget(self, container_id: str) -> None:
        self._states.pop(container_id, None)

    async def monitor(self, container_id: str, check: HealthConfig, argv: list[str]) -> None:
        """Probe until cancelled (the container's main process ended) or the container is gone."""
        state = self._states.setdefault(container_id, HealthState())  # `begin` made it at the start
        began = trio.current_time()
        while True:
            in_start = trio.current_time() < began + check.start_period
            await trio.sleep(check.start_interval if in_start and check.start_interval else check.interval)
            start = now_iso()
            try:
                code, output = await self._probe(container_id, argv, check.timeout or 30.0)
            except Conflict:
                return  # it is stopping: the monitor is about to be cancelled anyway
            result = HealthResult(start=start, end=now_iso(), exit_code=code, output=output)
            in_start = trio.current_time() < began + check.start_period
            if state.record(result, retries=check.retries, in_start_period=in_start):
                log.info("container is %s", state.status, extra={"container": container_id})
                self._publish(container_id, state.status)


class ExecProbe:
    """A probe as an exec in the running container, launched by `run_process` (under the
    container's lock, as any exec) and killed by `stop_exec` when it exceeds its timeout."""

    def __init__(self, run_process: Callable[..., Awaitable[Run]], stop_exec: Callable[..., Awaitable[None]]) -> None:
        self._run_process = run_process
        self._stop_exec = stop_exec

    async def __call__(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, str]:
        """(exit code, start of the output); -1 when it timed out or could not run. Conflict when
        the container no longer runs."""
        fanout = Fanout()
        output = fanout.subscribe(lossless=True)
        try:
            run = await self._run_process(container_id, exec_id=new_id(), cmd=argv, user="", env=[], tty=False,
                                          fanout=fanout, start_container=False, on_exec_exit=_ignore_exit)
        except Conflict:
            output.close()
            raise
        except KleeneError as exc:  # the probe could not run (no such command, its user is gone, ...)
            output.close()
            return exc.exit_code if isinstance(exc, ExecFailed) else -1, exc.message
        with trio.move_on_after(timeout) as scope:
            kept = await _read_output(output)
            await run.exited.wait()
        if scope.cancelled_caught:
            output.close()
            await self._stop_exec(run.exec_id, force=True)
            return -1, f"Health check exceeded timeout ({timeout:g}s)"
        return (run.exit_code if run.exit_code is not None else -1), kept.decode(errors="replace")


async def _ignore_exit(run: Run) -> None:
    """A probe's exit needs no cleanup of its own (its result is read from its `Run`)."""


async def _read_output(output: trio.MemoryReceiveChannel[Chunk], limit: int = OUTPUT_LIMIT) -> bytes:
    """The first `limit` bytes of a probe's output (stdout and stderr), reading to the end."""
    kept = bytearray()
    async for _stream, data in output:
        if len(kept) < limit:
            kept += data[: limit - len(kept)]
    return bytes(kept)
