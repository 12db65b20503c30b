"""stats and top: what running containers use, sampled from the runtime's counters.

A stats stream keeps the previous sample of each container and reports, every interval, the
CPU time used since then over the wall time (100 % is one CPU, as docker shows it) next to the
current memory, pids, network and block I/O counters. Containers that are not running are
left out; a stream of named containers ends when none of them runs any more, a stream of "all"
goes on and picks up containers started later.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from kleene_protocol.models import ContainerProcess, ContainerStats, ContainerTop, StatsSample

from ..platform.base import LayerStorage, Runtime, Usage
from ..platform.posix.rootpath import PathEscape, read_text_in_root
from .containers import Containers
from .errors import Conflict, NotFound
from .supervisor import Supervisor
from .users import passwd_names


@dataclass(frozen=True)
class _Reading:
    at_ns: int  # monotonic
    usage: Usage


def _stats(container_id: str, name: str | None, before: _Reading | None, now: _Reading) -> ContainerStats:
    u = now.usage
    cpu = 0.0
    if before is not None and now.at_ns > before.at_ns:
        cpu = max(0, u.cpu_ns - before.usage.cpu_ns) / (now.at_ns - before.at_ns) * 100
    return ContainerStats(id=container_id, name=name, cpu_percent=round(cpu, 2), memory=u.memory,
                          memory_limit=u.memory_limit, pids=u.pids, pids_limit=u.pids_limit, net_rx=u.net_rx,
                          net_tx=u.net_tx, block_read=u.block_read, block_write=u.block_write)  # fmt: skip


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Stats:
    def __init__(self, containers: Containers, supervisor: Supervisor, runtime: Runtime,
                 storage: LayerStorage) -> None:
        self._containers = containers
        self._supervisor = supervisor
        self._runtime = runtime
        self._storage = storage

    def _read(self, container_id: str) -> _Reading | None:
        run = self._supervisor.init_run(container_id)
        if run is None:
            return None
        found = self._runtime.usage(container_id, run.process.pid)
        return None if found is None else _Reading(time.monotonic_ns(), found)

    def _name(self, container_id: str) -> str | None:
        try:
            return self._containers.get(container_id).name
        except NotFound:  # removed since it was sampled
            return None

    def _targets(self, ids: list[str] | None) -> list[str]:
        running = self._supervisor.running_containers()
        return [i for i in ids if i in running] if ids is not None else running

    def stream(self, idents: list[str], *, interval: float, stream: bool) -> AsyncIterator[StatsSample]:
        """Samples every `interval` seconds (the first one after `interval`: CPU use needs two
        readings). Raises NotFound for an unknown ident here, before anything is sampled."""
        ids = [self._containers.get(ident).id for ident in idents] or None
        return self._samples(ids, interval, stream)

    async def _samples(self, ids: list[str] | None, interval: float, stream: bool) -> AsyncIterator[StatsSample]:
        names: dict[str, str | None] = {}
        previous: dict[str, _Reading] = {}
        for container_id in self._targets(ids):
            if (reading := self._read(container_id)) is not None:
                previous[container_id] = reading
        while True:
            await trio.sleep(interval)
            current: dict[str, _Reading] = {}
            for container_id in self._targets(ids):
                if (reading := self._read(container_id)) is not None:
                    current[container_id] = reading
            for container_id in current.keys() - names.keys():
                names[container_id] = self._name(container_id)
            yield StatsSample(time=_iso(time.time()), containers=[
                _stats(i, names[i], previous.get(i), reading) for i, reading in current.items()])
            previous = current
            if not stream or (ids is not None and not current):
                return

    def top(self, ident: str) -> ContainerTop:
        """The processes of a running container, with user names from its /etc/passwd."""
        record = self._containers.get(ident)
        if not self._supervisor.is_running(record.id):
            raise Conflict(f"container {record.id} is not running")
        try:
            passwd = read_text_in_root(self._storage.rootfs_path(record.id), "/etc/passwd")
        except PathEscape:
            passwd = None
        names = passwd_names(passwd)
        processes = [
            ContainerProcess(pid=p.pid, ppid=p.ppid, uid=p.uid, host_uid=p.host_uid,
                             user=names.get(p.uid, str(p.uid)), state=p.state, cpu_time=round(p.cpu_seconds, 2),
                             rss=p.rss, started=_iso(p.started), command=" ".join(p.args))
            for p in self._runtime.processes(record.id)
        ]  # fmt: skip
        return ContainerTop(id=record.id, processes=processes)
