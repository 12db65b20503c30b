"""`JailRuntime`: containers as persistent jails, every process started with jexec (jail.py).

The lifecycle, split the way a jail needs it (the Linux runtime's single `start` cannot be):

    create(spec)            nullfs mounts into the root (each destination resolved inside the
                            root when the mounts before it are in place), `jail -c ... persist`,
                            rctl limits
    (network driver)        plug epairs / add aliases: the jail exists, nothing runs yet
    exec(name, command)     the main process or any other: `jexec ... /usr/bin/env ... argv`
    stop(name, main)        stop signal -> grace -> exec.stop (B1) -> `jail -r`
    delete(name, root)      `jail -r` if still there, then devfs and nullfs (deepest first,
                            B21) and the rctl rules; idempotent, every step check-then-act

Cancellation: `create` undoes itself (shielded) when it fails or is cancelled, so a half-made
jail never stays; `delete` is what a caller's shielded cleanup runs.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import signal as signals
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kleened.platform.base import HostCommandError, Limits
from kleened.platform.linux.process import RuncProcess
from kleened.platform.posix.rootpath import resolve_in_root

from . import jail, mounts, params, rctl
from .command import Commands

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT = 30.0  # seconds for a shielded undo
EXEC_STOP_TIMEOUT = 60.0  # seconds rc.shutdown may take (jail(8)'s stop.timeout is per signal)


@dataclass(frozen=True)
class JailSpec:
    """What `create` makes: a jail named after the container, rooted at its dataset."""

    name: str
    root: Path  # the container's mountpoint
    network: jail.Network
    user: str  # the container's user (image USER or `-u`)
    params: list[str] = field(default_factory=list)  # the user's jail_param, already `check`ed
    mounts: list[mounts.Bind] = field(default_factory=list)  # in order: outer before nested
    limits: Limits = field(default_factory=Limits)

    def all_params(self) -> list[str]:
        return params.with_defaults(self.params, container_id=self.name, user=self.user)


class JailRuntime:
    """`Runtime` on jail(8)/jexec(8); see the module docstring."""

    name = "jail"

    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    def version(self) -> str:
        return platform.release()

    def check_params(self, given: Sequence[str]) -> list[str]:
        return params.check(given)

    # --- create / delete -------------------------------------------------------------------------

    async def create(self, spec: JailSpec) -> None:
        """Mount, create the persistent jail, apply limits. Undone entirely on failure."""
        wanted = rctl.rules(spec.name, spec.limits)  # ValueError for what rctl cannot do, before anything
        if wanted:
            await self._need_racct()
        argv = jail.create_argv(spec.name, spec.root, jail.network_params(spec.network),
                                params.jail_line(spec.all_params()))
        created = False
        try:
            for bind in spec.mounts:
                plan = mounts.prepare(spec.root, bind.source, bind.destination, read_only=bind.read_only)
                await self.commands.run(mounts.mount_argv(plan))
            await self.commands.run(argv)
            created = True
            for rule in wanted:
                await self.commands.run(rctl.add_argv(rule))
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                if created:
                    await self.delete(spec.name, spec.root, limits=bool(wanted))
                else:  # the name may belong to another jail (a name in use): only our mounts go
                    await self.unmount_all(spec.root)
            raise

    async def delete(self, name: str, root: Path, *, limits: bool = True) -> None:
        """Remove the jail if it exists, then everything mounted under its root, deepest first
        (devfs included: `jail -r` leaves it), then its rctl rules. Idempotent."""
        if await self.is_running(name):
            await self.commands.run(jail.remove_argv(name))
        await self.unmount_all(root)
        if limits:
            with contextlib.suppress(HostCommandError):  # no racct, or no rules: nothing to remove
                await self.commands.run(rctl.remove_argv(name))

    async def update_limits(self, name: str, limits: Limits) -> None:
        """Replace the running jail's rctl rules (a live change, as `Runtime.update_limits`)."""
        wanted = rctl.rules(name, limits)
        if wanted:
            await self._need_racct()
        with contextlib.suppress(HostCommandError):  # no rules yet
            await self.commands.run(rctl.remove_argv(name))
        for rule in wanted:
            await self.commands.run(rctl.add_argv(rule))

    async def _need_racct(self) -> None:
        if (await self.commands.run(rctl.RACCT_ARGV)).strip() != "1":
            raise ValueError(rctl.RACCT_HINT)

    async def unmount_all(self, root: Path) -> None:
        for entry in mounts.under(await self.mounted(), root):
            await self.commands.run(mounts.umount_argv(entry.node))

    async def mounted(self) -> list[mounts.Mounted]:
        return mounts.parse_mount_p(await self.commands.run(mounts.MOUNTS_ARGV))

    # --- processes ---------------------------------------------------------------------------------

    async def exec(self, name: str, command: jail.Command, user: params.ProcessUser) -> RuncProcess:
        """Start `command` in the running jail as our child (its exit status is the command's)."""
        return await self.commands.spawn(jail.exec_argv(name, command, user), tty=command.tty)

    async def run_as_root(self, name: str, *args: str) -> str:
        """A short command kleened runs in the jail for itself (network configuration)."""
        return await self.commands.run(jail.root_argv(name, *args))

    async def stop(self, name: str, root: Path, given: Sequence[str], main: RuncProcess | None = None, *,
                   signum: int = signals.SIGTERM, grace: float = 3.0) -> None:
        """Stop the container: `signum` to the main process and up to `grace` seconds for it,
        then `exec.stop` in the jail (B1; skipped when its program is not in the image), then
        `jail -r`, which SIGTERMs what is left and removes the jail. The caller reaps `main`."""
        if main is not None and main.returncode is None:
            main.signal(signum)
            with trio.move_on_after(grace):
                await main.wait()
        if not await self.is_running(name):
            return
        stop = params.stop_command(given)
        if stop is not None and _in_image(root, stop):
            user = params.process_user(given, "root")
            with trio.move_on_after(EXEC_STOP_TIMEOUT), contextlib.suppress(HostCommandError):
                await self.commands.run(jail.exec_argv(name, jail.Command(args=stop), user), timeout=EXEC_STOP_TIMEOUT)
        with contextlib.suppress(HostCommandError):
            await self.commands.run(jail.remove_argv(name), timeout=EXEC_STOP_TIMEOUT)

    async def update(self, name: str, given: Sequence[str]) -> None:
        """`jail -m` with the user's params (live changes; e.g. `allow.raw_sockets`)."""
        await self.commands.run(jail.modify_argv(name, params.jail_line(params.check(given))))

    # --- state -----------------------------------------------------------------------------------

    async def is_running(self, name: str) -> bool:
        return await self.commands.succeeds(jail.exists_argv(name))

    async def list_jails(self, under: Path | None = None) -> dict[str, jail.JailInfo]:
        """Every jail, or those whose root is below `under` (kleened's: its datasets' mountpoints)."""
        found = jail.parse_jls(await self.commands.run(jail.LIST_ARGV))
        if under is None:
            return found
        top = str(under).rstrip("/") + "/"
        return {name: info for name, info in found.items() if info.path.startswith(top)}

    async def process_count(self, name: str) -> int:
        try:
            return len(jail.parse_pids(await self.commands.run(jail.processes_argv(name))))
        except HostCommandError:
            return 0


def _in_image(root: Path, command: list[str]) -> bool:
    """Whether the image has the program (and, for the default, /etc/rc.shutdown): a jail made
    from a minimal userland has neither, and exec.stop is then skipped, not failed."""
    needed = command[:2] if command == params.DEFAULT_STOP else command[:1]
    return all(resolve_in_root(root, path).exists() for path in needed)
