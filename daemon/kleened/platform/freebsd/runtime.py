"""`JailRuntime`: containers as persistent jails, every process started with jexec (jail.py).

The lifecycle, split the way a jail needs it (the Linux runtime's single `start` cannot be):

    create(spec)            the neutral entry (`ContainerSpec`): translated into a `JailSpec`
                            and made by `create_jail`; the spec's process is kept for `start`
    start(container_id)     jexec of the process `create` was given: the container's main process
    create_jail(spec)       nullfs mounts into the root (each destination resolved inside the
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

from kleened.platform.base import BindMount, ContainerSpec, HostCommandError, Limits, NetworkMode
from kleened.platform.linux.process import RuncProcess
from kleened.platform.posix.rootpath import PathEscape, read_text_in_root, resolve_in_root

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
        self._created: dict[str, tuple[JailSpec, jail.Command]] = {}  # container id -> what `start` runs

    def version(self) -> str:
        return platform.release()

    def check_params(self, given: Sequence[str]) -> list[str]:
        return params.check(given)

    # --- today's Runtime entries, with their FreeBSD meaning (docs/freebsd.md) --------------------

    @staticmethod
    def check_seccomp(profile: str) -> str:
        """Only "" and "unconfined": seccomp is Linux's; a jail is confined by its parameters."""
        if profile not in ("", "unconfined"):
            raise ValueError("seccomp profiles are Linux's; a jail is confined by its parameters")
        return profile

    @staticmethod
    def check_userns() -> None:
        raise ValueError("FreeBSD has no user namespaces")

    def oom_kills(self, container_id: str) -> int:
        """0: rctl's `memoryuse:deny` refuses allocations, it kills nothing."""
        return 0

    async def close(self) -> None:
        """Nothing the jails share needs releasing."""

    # --- create / delete -------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> None:
        """The container's persistent jail with its mounts and limits, nothing running in it yet
        (the network driver plugs a vnet jail next; `start` runs `spec.process`). Raises
        ValueError for what a jail cannot do (a tmpfs mount, seccomp, a user namespace, a uid the
        image's passwd does not name). Undone entirely on failure."""
        jail_spec, command = to_jail_spec(spec)
        await self.create_jail(jail_spec)
        self._created[spec.id] = (jail_spec, command)

    async def start(self, container_id: str) -> RuncProcess:
        """Run the process `create` was given, as the container's main process (our child)."""
        try:
            jail_spec, command = self._created[container_id]
        except KeyError:
            raise ValueError(f"container {container_id} was not created by this runtime") from None
        return await self.exec(container_id, command, params.process_user(jail_spec.all_params(), jail_spec.user))

    def created(self, container_id: str) -> JailSpec:
        """The jail `create` made for the container (KeyError once deleted)."""
        return self._created[container_id][0]

    async def create_jail(self, spec: JailSpec) -> None:
        """Mount, create the persistent jail, apply limits. Undone entirely on failure."""
        wanted = rctl.rules(spec.name, spec.limits)  # ValueError for what rctl cannot do, before anything
        if wanted:
            await self._need_racct()
        argv = jail.create_argv(spec.name, spec.root, jail.network_params(spec.network),
                                params.jail_line(spec.all_params()))
        created = False
        mounted: list[Path] = []  # where this call mounts, in order (registered before the mount)
        before = await self.mounted() if spec.mounts else []  # what is not ours to undo
        try:
            for bind in spec.mounts:
                plan = mounts.prepare(spec.root, bind.source, bind.destination, read_only=bind.read_only)
                mounted.append(plan.target)
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
                    await self.unmount_own(mounted, before)
            raise

    async def delete(self, name: str, root: Path, *, limits: bool = True) -> None:
        """Remove the jail if it exists, then everything mounted under its root, deepest first
        (devfs included: `jail -r` leaves it), then its rctl rules. Idempotent."""
        self._created.pop(name, None)
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

    async def unmount_own(self, targets: Sequence[Path], before: Sequence[mounts.Mounted]) -> None:
        """Undo the mounts a failed `create_jail` made, last first: at each target, only a mount
        above those `before` had (another jail of the same root keeps its own)."""
        for target in reversed(targets):
            if _count(await self.mounted(), target) > _count(before, target):
                await self.commands.run(mounts.umount_argv(target))

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


def _count(found: Sequence[mounts.Mounted], node: Path) -> int:
    return sum(m.node == str(node) for m in found)


def _in_image(root: Path, command: list[str]) -> bool:
    """Whether the image has the program (and, for the default, /etc/rc.shutdown): a jail made
    from a minimal userland has neither, and exec.stop is then skipped, not failed."""
    needed = command[:2] if command == params.DEFAULT_STOP else command[:1]
    return all(resolve_in_root(root, path).exists() for path in needed)


_NETWORKS = {NetworkMode.HOST: "host", NetworkMode.NONE: "disabled", NetworkMode.NAMESPACE: "vnet",
             NetworkMode.ADDRESSES: "ipnet"}


def to_jail_spec(spec: ContainerSpec) -> tuple[JailSpec, jail.Command]:
    """The jail and main process for a neutral `ContainerSpec`. An ipnet jail starts with empty
    address lists (`ip4=new ip6=new`); the network driver's `set_addresses` fills them."""
    JailRuntime.check_seccomp(spec.seccomp)
    if spec.userns is not None:
        JailRuntime.check_userns()
    binds = []
    for mount in spec.mounts:
        if not isinstance(mount, BindMount):
            raise ValueError(f"tmpfs mounts are not supported in jails yet ({mount.destination})")
        binds.append(mounts.Bind(source=mount.source, destination=mount.destination, read_only=mount.read_only))
    given = [key if val is None else f"{key}={val}" for key, val in spec.params.items()]
    if params.value(given, "host.hostname") is None and spec.hostname:
        given.append(f"host.hostname={spec.hostname}")
    user = user_name(spec.rootfs, spec.process.uid)
    jail_spec = JailSpec(name=spec.id, root=spec.rootfs, network=jail.Network(_NETWORKS[spec.network]), user=user,
                         params=params.check(given), mounts=binds, limits=spec.limits)
    command = jail.Command(args=list(spec.process.args), env=list(spec.process.env), cwd=spec.process.cwd,
                           tty=spec.process.tty)
    return jail_spec, command


def user_name(root: Path, uid: int) -> str:
    """The name of `uid` in the image's /etc/passwd (jexec -U takes a name); root without one."""
    try:
        text = read_text_in_root(root, "/etc/passwd")
    except (OSError, PathEscape):
        text = None
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(uid):
            return fields[0]
    if uid == 0:
        return "root"
    raise ValueError(f"uid {uid} has no name in the image's /etc/passwd (jexec needs a user name)")
