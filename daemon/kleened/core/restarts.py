"""Restart policies: what a policy says after an exit, the back-off, and the pending restarts.

Policies (Docker's, plus upstream's two): `no`; `on-startup` (upstream: started when kleened
starts, never after an exit); `always` (restarted after every exit, and at daemon start);
`unless-stopped` (as `always`, but a container a user stopped stays stopped, also across daemon
restarts); `on-failure[:max-retries]` (restarted after a non-zero exit, at most `max-retries`
times when given). A stop by a user never leads to a restart: the container was `stopping`
when its process ended, which only a stop (or the daemon's shutdown) makes it.

The back-off is Docker's: 100 ms before the first restart, doubling for each restart after, at
most one minute; a run that lasted 10 s or more starts over at 100 ms. The pending restarts
(`Restarts`) are tasks in their own nursery, keyed by container id; cancelling one (a stop, a
removal, a start by a user, shutdown) happens under the container's lock, and the task checks
that it is still pending under the same lock before it starts anything, so a cancelled restart
never starts a container.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import trio

from .errors import KleeneError

log = logging.getLogger(__name__)

FIRST_DELAY = 0.1  # seconds before the first restart (Docker's)
MAX_DELAY = 60.0  # the back-off stops doubling here
RESET_AFTER = 10.0  # seconds of running after which the back-off starts over
UPSTREAM = ("no", "on-startup")
NAMES = ("no", "on-startup", "always", "unless-stopped", "on-failure")
USAGE = "use no, on-startup, always, unless-stopped or on-failure[:max-retries]"


@dataclass(frozen=True)
class Policy:
    name: str
    max_retries: int = 0  # on-failure only; 0 is "no limit"

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    @property
    def upstream(self) -> str:
        """The closest of upstream's two values (what upstream clients are shown): whether
        the container starts with the daemon."""
        return "on-startup" if self.name in ("on-startup", "always", "unless-stopped") else "no"

    def restarts_after(self, exit_code: int | None, restarts: int) -> bool:
        """After an exit the container itself made (no stop asked for it), with `restarts` done so far."""
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name == "on-failure":
            return exit_code != 0 and (self.max_retries == 0 or restarts < self.max_retries)
        return False

    def starts_with_daemon(self, stopped_by_user: bool) -> bool:
        if self.name in ("on-startup", "always"):
            return True
        return self.name == "unless-stopped" and not stopped_by_user


def parse_policy(text: str | None) -> Policy:
    """`on-failure:3` -> Policy("on-failure", 3); None or "" is `no`. ValueError with one line otherwise."""
    if not text:
        return Policy("no")
    name, colon, count = text.partition(":")
    if name not in NAMES:
        raise ValueError(f"invalid restart policy '{text[:40]}': {USAGE}")
    if not colon:
        return Policy(name)
    if name != "on-failure":
        raise ValueError(f"invalid restart policy '{text[:40]}': only on-failure takes a maximum retry count")
    if not count.isascii() or not count.isdigit() or len(count) > 9:
        raise ValueError(f"invalid restart policy '{text[:40]}': the maximum retry count must be a number")
    return Policy(name, int(count))


class HasPolicy(Protocol):
    restart: str
    restart_policy: str | None


def policy_of(container: HasPolicy) -> Policy:
    """A stored container's policy: `restart` (empty in records older than it) or `restart_policy`."""
    try:
        return parse_policy(container.restart or container.restart_policy)
    except ValueError:
        return Policy("no")


def checked_policy(text: str | None, error: type[KleeneError], prefix: str = "") -> Policy:
    """A policy from a request; `error` (with `prefix`) says what is wrong with it."""
    try:
        return parse_policy(text)
    except ValueError as exc:
        raise error(f"{prefix}{exc}") from None


def ran_for(started: str | None, finished: str | None) -> float:
    """Seconds a run lasted, from its RFC 3339 start and finish stamps; 0 when either is missing."""
    if not started or not finished:
        return 0.0
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def next_delay(previous: float, ran_for: float) -> float:
    """The back-off before the next restart, given the previous one (0: none yet) and how long
    the last run lasted."""
    if ran_for >= RESET_AFTER or previous <= 0:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)


@dataclass(eq=False)
class Pending:
    """A scheduled restart: cancelled by `Restarts.cancel`, which the task checks under the lock."""

    container_id: str
    delay: float
    scope: trio.CancelScope


class Restarts:
    """The pending restarts and each container's back-off (in memory: a daemon start begins afresh)."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._pending: dict[str, Pending] = {}
        self._delays: dict[str, float] = {}
        self._starting: set[str] = set()  # taken restarts whose start has not returned yet
        self.closed = False  # shutdown began: nothing is scheduled any more

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def is_pending(self, container_id: str) -> bool:
        return container_id in self._pending

    def delay_of(self, container_id: str) -> float:
        return self._delays.get(container_id, 0.0)

    def schedule(self, container_id: str, ran_for: float,
                 restart: Callable[[Pending], Awaitable[None]]) -> Pending | None:
        """Call `restart(pending)` after the back-off. Call under the container's lock. None when
        restarts are closed (shutdown) or there is no nursery (a daemon without the scheduler)."""
        if self.closed or self._nursery is None:
            return None
        self.cancel(container_id)
        delay = self._delays[container_id] = next_delay(self._delays.get(container_id, 0.0), ran_for)
        pending = self._pending[container_id] = Pending(container_id, delay, trio.CancelScope())
        self._nursery.start_soon(self._wait_then, pending, restart)
        return pending

    async def _wait_then(self, pending: Pending, restart: Callable[[Pending], Awaitable[None]]) -> None:
        with pending.scope:
            await trio.sleep(pending.delay)
            try:
                await restart(pending)
            except Exception:
                log.exception("restarting the container failed", extra={"container": pending.container_id})
            finally:
                self._starting.discard(pending.container_id)

    def take(self, pending: Pending) -> bool:
        """Under the container's lock: True if `pending` is still the pending restart (it is then no longer)."""
        if self._pending.get(pending.container_id) is not pending:
            return False
        del self._pending[pending.container_id]
        self._starting.add(pending.container_id)
        return True

    def cancel(self, container_id: str) -> bool:
        """Cancel the pending restart of `container_id` (call under its lock); True if there was one."""
        pending = self._pending.pop(container_id, None)
        if pending is None:
            return False
        pending.scope.cancel()
        return True

    def reset(self, container_id: str) -> None:
        """A user started or removed the container: the next back-off starts at the first delay."""
        self.cancel(container_id)
        self._delays.pop(container_id, None)

    def close(self) -> list[str]:
        """Shutdown: cancel every pending restart and schedule none after. Returns the containers
        whose restart is starting right now (their starter holds their lock)."""
        self.closed = True
        for container_id in list(self._pending):
            self.cancel(container_id)
        return sorted(self._starting)
