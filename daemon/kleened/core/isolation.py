"""Isolation and resource control of containers: what their limits, seccomp profile and user
namespace are, checked at create and update, and handed to the runtime at start.

Where a setting comes from, first found wins:
- limits: the container's `resources` field, then the `linux.memory`, `linux.pids` and
  `linux.cpus` jail parameters (the way upstream clients can say it), then the daemon's
  `default_pids_limit` (Podman's 2048 unless configured);
- seccomp: the `seccomp` field, then the `linux.seccomp` jail parameter, then the runtime's
  host-wide setting;
- user namespace: the `userns` field ("host" or "remap"), then the daemon's `userns_remap`
  (configured: containers are remapped unless they say "host").
Limits change on a running container at once (`Runtime.update_limits`); ulimits, seccomp and
the user namespace at its next start.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kleene_protocol.models import ContainerConfig, ContainerUpdate, Resources, Ulimit, UsernsMode

from ..platform.base import HostCommandError, Limits, Runtime, UserNamespace
from .errors import Conflict, InvalidArgument
from .records import ContainerRecord

log = logging.getLogger(__name__)

DEFAULT_PIDS_LIMIT = 2048  # as Podman: a fork bomb stops here, real workloads do not
DEFAULT_CPU_PERIOD = 100_000  # microseconds, the kernel's (and docker's) CFS period
MIN_MEMORY = 6 * 1024 * 1024  # bytes; runc itself cannot start a container with less (docker's floor)
MAX_NOFILE = 1 << 20  # the kernel's default fs.nr_open: setrlimit refuses more
UPDATE_FAILED = "an error ocurred while updating the container: "  # upstream's prefix (sic)


def _check_resources(r: Resources) -> str | None:
    """What is wrong with `r` (one line), or None."""
    if r.memory is not None and r.memory != 0 and r.memory < MIN_MEMORY:
        return f"memory limit must be at least {MIN_MEMORY} bytes (6 MiB)"
    if r.memory_swap is not None and r.memory_swap not in (0, -1):
        if not r.memory:
            return "a memory_swap limit needs a memory limit"
        if r.memory_swap < r.memory:
            return "memory_swap (memory plus swap) must be at least memory"
    cpus = os.cpu_count() or 1
    if r.cpus is not None and r.cpus != 0 and not 0.01 <= r.cpus <= cpus:
        return f"cpus must be between 0.01 and {cpus} (the CPUs of this host)"
    if r.cpu_period is not None and r.cpu_period != 0 and not 1000 <= r.cpu_period <= 1_000_000:
        return "cpu_period must be between 1000 and 1000000 microseconds"
    if r.cpu_shares is not None and r.cpu_shares != 0 and not 2 <= r.cpu_shares <= 262144:
        return "cpu_shares must be between 2 and 262144"
    if r.pids_limit is not None and r.pids_limit < -1:
        return "pids_limit must be positive, or -1 or 0 for no limit"
    return _check_ulimits(r.ulimits or [])


def _check_ulimits(ulimits: list[Ulimit]) -> str | None:
    names = [u.name for u in ulimits]
    if len(set(names)) != len(names):
        return "each ulimit may be given once"
    for u in ulimits:
        if not 0 <= u.soft <= u.hard:
            return f"ulimit {u.name}: the soft limit must be between 0 and the hard limit"
        if u.name == "nofile" and u.hard > MAX_NOFILE:
            return f"ulimit nofile: at most {MAX_NOFILE}"
    return None


def merge_resources(stored: Resources, change: Resources) -> Resources:
    """`stored` with the set fields of `change`; 0 (and [] for ulimits) removes a limit."""
    fields = {name: getattr(stored, name) for name in Resources.__struct_fields__}
    for name in Resources.__struct_fields__:
        value = getattr(change, name)
        if value is None:
            continue
        if name == "pids_limit":
            fields[name] = -1 if value in (0, -1) else value
        elif name == "ulimits":
            fields[name] = list(value) or None
        else:
            fields[name] = value or None
    return Resources(**fields)


class Isolation:
    def __init__(self, runtime: Runtime, *, default_pids_limit: int = DEFAULT_PIDS_LIMIT,
                 userns: UserNamespace | None = None) -> None:
        self._runtime = runtime
        self._default_pids = default_pids_limit
        self._userns = userns

    # --- create and update ---------------------------------------------------------------------

    def check_create(self, config: ContainerConfig) -> tuple[Resources, str, UsernsMode]:
        """The container's stored settings; InvalidArgument with one line when they are wrong."""
        resources = merge_resources(Resources(), config.resources or Resources())
        if error := _check_resources(resources):
            raise InvalidArgument(error)
        try:
            seccomp = self._runtime.check_seccomp(config.seccomp)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        self._check_userns(config.userns, InvalidArgument)
        return resources, seccomp, config.userns

    def _check_userns(self, mode: UsernsMode, error: type[InvalidArgument] | type[Conflict]) -> None:
        if mode == "remap" and self._userns is None:
            raise error("userns 'remap' needs the daemon setting userns_remap")

    async def update(self, record: ContainerRecord, update: ContainerUpdate, *, running: bool) -> None:
        """Take the isolation fields of `update` into `record`; a running container gets its new
        limits at once. Conflict (upstream's update error) when they are wrong or refused."""
        if update.resources is not None:
            resources = merge_resources(record.resources, update.resources)
            if error := _check_resources(resources):
                raise Conflict(UPDATE_FAILED + error)
            if running:
                await self._apply(record, resources)
            record.resources = resources
        if update.seccomp is not None:
            try:
                record.seccomp = self._runtime.check_seccomp(update.seccomp)
            except ValueError as exc:
                raise Conflict(UPDATE_FAILED + str(exc)) from None
        if update.userns is not None:
            self._check_userns(update.userns, Conflict)
            record.userns = update.userns

    async def _apply(self, record: ContainerRecord, resources: Resources) -> None:
        params = self._params(record)
        limits = self.limits(resources, params)
        try:
            await self._runtime.update_limits(record.id, limits)
        except HostCommandError as exc:
            raise Conflict(f"{UPDATE_FAILED}the running container refused the new limits: {exc.stderr}") from None
        log.info("container limits updated", extra={"container": record.id})

    # --- start -----------------------------------------------------------------------------------

    def _params(self, record: ContainerRecord) -> dict[str, str | None]:
        return self._runtime.check_params(record.jail_param)

    def limits(self, resources: Resources, params: dict[str, str | None]) -> Limits:
        """The limits in force for stored `resources` and normalised jail `params`."""
        memory = resources.memory or _int(params.get("linux.memory"))
        if resources.memory:
            swap = resources.memory_swap if resources.memory_swap else 2 * resources.memory
        else:
            swap = memory  # the jail parameter: no swap
        cpus = resources.cpus or (float(params["linux.cpus"]) if "linux.cpus" in params else None)
        period = resources.cpu_period or DEFAULT_CPU_PERIOD
        pids = resources.pids_limit
        if pids is None:
            pids = _int(params.get("linux.pids")) or self._default_pids or None
        ulimits = {u.name: (u.soft, u.hard) for u in resources.ulimits or []}
        return Limits(memory=memory, memory_swap=swap if memory else None,
                      cpu_quota=round(cpus * period) if cpus else None, cpu_period=period if cpus else None,
                      cpu_shares=resources.cpu_shares, pids=pids if pids and pids > 0 else None,
                      nofile=ulimits.get("nofile"), nproc=ulimits.get("nproc"))  # fmt: skip

    def effective(self, record: ContainerRecord) -> Resources:
        """The limits in force, as inspect shows them."""
        limits = self.limits(record.resources, self._params(record))
        cpus = limits.cpu_quota / limits.cpu_period if limits.cpu_quota and limits.cpu_period else None
        ulimits = [Ulimit(name=name, soft=pair[0], hard=pair[1])
                   for name, pair in (("nofile", limits.nofile), ("nproc", limits.nproc)) if pair]  # fmt: skip
        return Resources(memory=limits.memory, memory_swap=limits.memory_swap, cpus=cpus,
                         cpu_period=limits.cpu_period, cpu_shares=limits.cpu_shares,
                         pids_limit=limits.pids if limits.pids else -1, ulimits=ulimits or None)  # fmt: skip

    def userns_of(self, record: ContainerRecord) -> UserNamespace | None:
        """The user namespace the container runs in; InvalidArgument where it cannot."""
        mode = record.userns
        if mode == "host" or (mode == "" and self._userns is None):
            return None
        if self._userns is None:
            raise InvalidArgument("container asks for userns 'remap' but the daemon has no userns_remap")
        try:
            self._runtime.check_userns()
        except ValueError as exc:
            raise InvalidArgument(f"cannot start the container in a user namespace: {exc}") from None
        return self._userns

    def spec_fields(self, record: ContainerRecord) -> dict[str, Any]:
        """The isolation fields of the container's `ContainerSpec` (limits, seccomp, userns)."""
        params = self._params(record)
        return {"limits": self.limits(record.resources, params),
                "seccomp": record.seccomp or params.get("linux.seccomp") or "", "userns": self.userns_of(record)}

    def oom_killed(self, container_id: str) -> bool:
        """Whether the kernel killed a process of the container's current run for lack of memory;
        read before the runtime deletes the container (and its counters)."""
        try:
            return self._runtime.oom_kills(container_id) > 0
        except OSError as exc:
            log.warning("could not read the OOM counter", extra={"container": container_id, "error": str(exc)})
            return False


def _int(value: str | None) -> int | None:
    return int(value) if value else None
