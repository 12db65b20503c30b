"""`JailContainers`: `platform.base.Runtime` as core drives it, over `JailRuntime`.

Core names containers by id only; a jail also needs its root (mounts are undone under it) and
its parameters (the user, `exec.stop`). Both are kept here from `create`, and for a jail a
previous daemon left, the root is the container dataset's mountpoint (`roots`).

- `create` makes the persistent jail (mounts, limits) and returns it as the network sandbox:
  a vnet jail is what the network driver plugs epairs into, an ipnet jail what `jail -m`
  gives addresses to (`Sandbox.handle` is the jail's name, the container id);
- `start` runs the main process with jexec, as kleened's child; `exec` the same for others;
- `kill` signals the main process, or with `all_processes` every process `ps -J` lists;
- `delete` stops what is left (`exec.stop`, then `jail -r`) and undoes mounts and rctl rules.

No monitors: kleened's children die with it, so `find_containers` finds nothing and a restart
removes every jail of ours (`cleanup`). `usage` is `rctl -u jail:<id>` and `processes` is
`ps -J <id>` (usage.py); both run to completion as they are asked, since the interface is
synchronous (Linux reads cgroup files): each is one short command with a short timeout, and a
jail that is gone or a command that fails gives None / no processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from kleened.platform.base import (
    ContainerSpec,
    FoundContainer,
    HostCommandError,
    Limits,
    ProcessInfo,
    ProcessSpec,
    Sandbox,
    Usage,
)
from kleened.platform.linux.process import RuncProcess

from . import jail, params, usage
from .runtime import JailRuntime, user_name

log = logging.getLogger(__name__)
_VIEW_TIMEOUT = 2.0  # seconds for `rctl -u` or `ps -J`, which block the caller


@dataclass
class _Jail:
    root: Path
    given: list[str]  # every jail parameter the jail was made with (defaults included)
    limits: Limits
    main: RuncProcess | None = None


class JailContainers:
    """`Runtime` on jails; see the module docstring. `roots(id)`: a container's root path."""

    name = "jail"
    writes_logs = False

    def __init__(self, jails: JailRuntime, roots: Callable[[str], Path]) -> None:
        self.jails = jails
        self._roots = roots
        self._known: dict[str, _Jail] = {}

    def version(self) -> str:
        return platform.release()

    def check_params(self, given: Sequence[str]) -> dict[str, str | None]:
        """jail_param as `key -> value`, checked by `params.check`: None for a bare flag (`vnet`),
        "" for an empty value (`ip4.addr=`), which jail(8) reads differently."""
        return {key: value if sep else None
                for key, sep, value in (p.partition("=") for p in self.jails.check_params(given))}

    check_seccomp = staticmethod(JailRuntime.check_seccomp)
    check_userns = staticmethod(JailRuntime.check_userns)

    # --- lifecycle -----------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Sandbox:
        await self.jails.create(spec)
        self._known[spec.id] = _Jail(root=spec.rootfs, given=self.jails.created(spec.id).all_params(),
                                     limits=spec.limits)
        return Sandbox(container_id=spec.id, handle=spec.id)

    async def start(self, container_id: str) -> RuncProcess:
        process = await self.jails.start(container_id)
        self._known[container_id].main = process
        return process

    async def exec(self, container_id: str, process: ProcessSpec) -> RuncProcess:
        known = self._known.get(container_id)
        if known is None:
            raise ValueError(f"container {container_id} is not running")
        user = params.process_user(known.given, "", user_name(known.root, process.uid))
        command = jail.Command(args=list(process.args), env=list(process.env), cwd=process.cwd, tty=process.tty)
        return await self.jails.exec(container_id, command, user)

    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        """The main process, or with `all_processes` it and every process `ps -J` lists: a main
        process just started may still be jexec, not yet attached to the jail and not listed."""
        known = self._known.get(container_id)
        if known is not None and known.main is not None and known.main.returncode is None:
            known.main.signal(signum)
        if not all_processes:
            return
        try:
            pids = jail.parse_pids(await self.jails.commands.run(jail.processes_argv(container_id)))
        except HostCommandError:
            return  # no such jail: nothing runs
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signum)

    async def delete(self, container_id: str) -> None:
        """Stop what still runs (`exec.stop`, `jail -r`), then mounts and rctl rules. Idempotent."""
        known = self._known.pop(container_id, None)
        root = known.root if known is not None else self._roots(container_id)
        given = known.given if known is not None else []
        await self.jails.stop(container_id, root, given, grace=0)
        await self.jails.delete(container_id, root)

    async def list_containers(self) -> dict[str, str]:
        return {name: "running" for name in await self._ours()}

    async def _ours(self) -> list[str]:
        """Jails whose root is one of kleened's container datasets."""
        ours = []
        for name, info in (await self.jails.list_jails()).items():
            with contextlib.suppress(ValueError):  # a name no container dataset can have
                if os.path.realpath(info.path) == os.path.realpath(self._roots(name)):
                    ours.append(name)
        return ours

    async def cleanup(self, keep: Collection[str] = ()) -> None:
        """At start-up: every jail of ours but those in `keep` is removed with its mounts."""
        for name in await self._ours():
            if name not in keep:
                await self.delete(name)

    async def close(self) -> None:
        await self.jails.close()

    # --- what a previous daemon left: nothing survives kleened ------------------------------------

    def find_containers(self) -> dict[str, FoundContainer]:
        return {}

    def reopen_log(self, container_id: str) -> bool:
        return False

    async def adopt(self, container_id: str) -> RuncProcess:
        raise LookupError(f"jails do not outlive kleened: {container_id} cannot be adopted")

    # --- limits and views ----------------------------------------------------------------------

    async def update_limits(self, container_id: str, limits: Limits) -> None:
        await self.jails.update_limits(container_id, limits)
        if (known := self._known.get(container_id)) is not None:
            known.limits = limits

    def oom_kills(self, container_id: str) -> int:
        return self.jails.oom_kills(container_id)

    def process_count(self, container_id: str) -> int:
        known = self._known.get(container_id)
        return int(known is not None and known.main is not None and known.main.returncode is None)

    def usage(self, container_id: str, pid: int) -> Usage | None:
        """`rctl -u jail:<id>` (usage.py maps it); None for a jail not known here or gone."""
        known = self._known.get(container_id)
        text = self._view(usage.usage_argv(container_id)) if known is not None else None
        return None if text is None else usage.to_usage(usage.parse_counters(text), known.limits)

    def processes(self, container_id: str) -> list[ProcessInfo]:
        """`ps -J <id>`: the jail's processes (none once it is gone)."""
        text = self._view(usage.processes_argv(container_id))
        return [] if text is None else usage.parse_processes(text, time.time())

    def _view(self, argv: list[str]) -> str | None:
        try:
            return self.jails.commands.run_now(argv, timeout=_VIEW_TIMEOUT)
        except (HostCommandError, OSError) as exc:
            log.debug("could not read a jail's counters or processes: %s", exc)
            return None
