"""Who may change an object, and when: per-object locks and the container state machine.

Every mutating operation on a container, volume or image holds that object's lock across its
awaits (`Locks.hold`) and checks the object's state under it, so the check stays true until the
operation ends. An operation on several objects takes their locks in one call, which orders them
by `KIND_ORDER` then key, so two operations never wait on each other in a cycle:

    image -> volume -> container -> (the networks lock, innermost: addresses, plugs, nft table)

Execs have no lock: an exec instance changes state only synchronously (`created` -> `started`
with no await in between), which is atomic under trio.

Container states live in memory (`ContainerStates`): what a container is doing *now*. At start
every stored container is `created` (never ran) or `stopped`, because start-up reconcile tears
down whatever a previous daemon left running. Transitions:

    created|stopped --start--> starting --> running --stop or exit--> stopping --> stopped
    starting --failure--> (back to where it was)
    created|stopped --remove--> removing --> (gone)

`starting` and `removing` are only ever seen by a task that does not hold the lock (a listing, or
an operation that must refuse); `stopping` is entered under the lock, but the teardown that ends
it runs in the container's own task, which takes the lock again for it.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from .errors import Conflict

KIND_ORDER = {"image": 0, "volume": 1, "container": 2}
Key = tuple[str, str]


@dataclass
class _Entry:
    lock: trio.Lock
    users: int = 0  # tasks holding or waiting for the lock; the entry goes when it drops to 0


class Locks:
    """One trio lock per object, made on first use and forgotten when nobody holds or waits."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}

    @contextlib.asynccontextmanager
    async def hold(self, *keys: Key) -> AsyncIterator[None]:
        """Hold the locks of `keys` (duplicates ignored), taken in the global order."""
        ordered = sorted(set(keys), key=lambda k: (KIND_ORDER[k[0]], k[1]))
        async with contextlib.AsyncExitStack() as stack:
            for key in ordered:
                await stack.enter_async_context(self._one(key))
            yield

    @contextlib.asynccontextmanager
    async def _one(self, key: Key) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(trio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def held(self, key: Key) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    def statistics(self) -> dict[str, int]:
        return {"objects": len(self._entries)}


class State(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REMOVING = "removing"


_ALLOWED: dict[State, set[State]] = {
    State.CREATED: {State.STARTING, State.REMOVING},
    State.STOPPED: {State.STARTING, State.REMOVING},
    State.STARTING: {State.RUNNING, State.CREATED, State.STOPPED},
    State.RUNNING: {State.STOPPING},
    State.STOPPING: {State.STOPPED},
    State.REMOVING: {State.CREATED, State.STOPPED},  # a removal that failed before the record went
}

# Why an operation is refused in a state (upstream's words where upstream has them).
BUSY = {
    State.STARTING: "container is starting",
    State.RUNNING: "container is running",
    State.STOPPING: "container is stopping",
    State.REMOVING: "container is being removed",
}


class ContainerStates:
    """The current state of every stored container; see the module docstring."""

    def __init__(self) -> None:
        self._states: dict[str, State] = {}

    def get(self, container_id: str, *, ever_started: bool = True) -> State:
        default = State.STOPPED if ever_started else State.CREATED
        return self._states.get(container_id, default)

    def move(self, container_id: str, new: State, *, ever_started: bool = True) -> State:
        """Change the state; returns the old one. An illegal transition is a bug: it raises."""
        old = self.get(container_id, ever_started=ever_started)
        if new not in _ALLOWED[old]:
            raise RuntimeError(f"container {container_id}: illegal transition {old.value} -> {new.value}")
        self._states[container_id] = new
        return old

    def require(self, container_id: str, allowed: set[State], *, ever_started: bool = True,
                refusal: dict[State, str] | None = None) -> State:
        """The state, if it is one of `allowed`; else a `Conflict` saying why."""
        state = self.get(container_id, ever_started=ever_started)
        if state not in allowed:
            raise Conflict((refusal or BUSY).get(state, f"container is {state.value}"))
        return state

    def forget(self, container_id: str) -> None:
        self._states.pop(container_id, None)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self._states.values():
            counts[state.value] = counts.get(state.value, 0) + 1
        return counts
