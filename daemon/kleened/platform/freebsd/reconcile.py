"""Start-up reconcile on FreeBSD: what a previous kleened (killed, crashed, upgraded) left on the
host, compared with what the store says should exist, and the actions that repair it.

`plan()` is pure: desired and observed state in, an ordered list of actions out (unit-tested
without a host). `Reconciler` observes the host and applies the plan; it never raises on the
unexpected: an action that fails is logged as a warning and the next one runs, so the daemon
always comes up.

What is repaired, in order:
1. jails under kleened's root that no running container owns: removed (`jail -r`);
2. mounts (nullfs, devfs) under the roots of those and of every stopped container: unmounted,
   deepest first;
3. kleened's epairs (group member, `kleened:<id>` description) no running container uses:
   destroyed;
4. network interfaces: the missing ones created and the missing addresses added; existing ones
   are never destroyed and recreated (upstream's B5 stripped running jails of their aliases
   and bridge members). Interfaces kleened owns that no network wants are destroyed; one that
   has the wanted name but is not kleened's is reported and left alone (B6);
5. container and image datasets the store does not know (a crash between `zfs clone` and the
   store write): destroyed. Volumes never are: their data is the user's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kleened.platform.base import HostCommandError

from . import netif
from .mounts import Mounted, umount_argv, under
from .network import FreeBSDNetworkDriver
from .runtime import JailRuntime
from .storage import ZfsStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WantedInterface:
    kind: str  # "loopback" or "bridge" (custom networks' interfaces are never kleened's)
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Desired:
    containers: frozenset[str] = frozenset()  # ids the store knows (datasets to keep)
    running: frozenset[str] = frozenset()  # containers whose jail may stay (live restore)
    images: frozenset[str] = frozenset()
    interfaces: Mapping[str, WantedInterface] = field(default_factory=dict)
    epairs: frozenset[str] = frozenset()  # host ends running containers use


@dataclass(frozen=True)
class Observed:
    jails: Mapping[str, str] = field(default_factory=dict)  # name -> root, jails under our root only
    container_roots: Mapping[str, str] = field(default_factory=dict)  # container id -> mountpoint
    mounts: Sequence[Mounted] = ()
    interfaces: Mapping[str, netif.Interface] = field(default_factory=dict)  # every host interface
    group: str = "kleened"
    container_datasets: frozenset[str] = frozenset()
    image_datasets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Action:
    verb: str  # remove_jail, unmount, destroy_interface, create_interface, add_address, conflict,
    #            destroy_container_fs, destroy_image
    target: str
    detail: str = ""


def _owned(observed: Observed) -> dict[str, netif.Interface]:
    return {name: i for name, i in observed.interfaces.items() if observed.group in i.groups}


def plan(desired: Desired, observed: Observed) -> list[Action]:
    actions = [Action("remove_jail", name, root) for name, root in sorted(observed.jails.items())
               if name not in desired.running]
    stale_roots = [root for cid, root in observed.container_roots.items() if cid not in desired.running]
    stale_roots += [root for name, root in observed.jails.items() if name not in desired.running]
    seen: set[str] = set()
    for root in stale_roots:
        for entry in under(observed.mounts, root):
            if entry.node not in seen:
                seen.add(entry.node)
                actions.append(Action("unmount", entry.node, entry.fstype))
    actions.sort(key=lambda a: (a.verb != "remove_jail", -a.target.count("/") if a.verb == "unmount" else 0))
    owned = _owned(observed)
    for name, found in sorted(owned.items()):
        is_epair = found.description.startswith(netif.EPAIR_DESCRIPTION)
        if (is_epair and name not in desired.epairs) or (not is_epair and name not in desired.interfaces):
            actions.append(Action("destroy_interface", name))
    for name, wanted in sorted(desired.interfaces.items()):
        found = observed.interfaces.get(name)
        if found is not None and name not in owned:
            actions.append(Action("conflict", name, "exists and was not created by kleened"))
            continue
        if found is None:
            actions.append(Action("create_interface", name, wanted.kind))
        present = set(found.cidrs) if found is not None else set()
        actions += [Action("add_address", name, cidr) for cidr in wanted.cidrs if cidr not in present]
    actions += [Action("destroy_container_fs", cid) for cid in sorted(observed.container_datasets - desired.containers)]
    actions += [Action("destroy_image", iid) for iid in sorted(observed.image_datasets - desired.images)]
    return actions


class Reconciler:
    """Observes the host through the FreeBSD drivers and applies `plan`."""

    def __init__(self, runtime: JailRuntime, network: FreeBSDNetworkDriver, storage: ZfsStorage) -> None:
        self.runtime = runtime
        self.network = network
        self.storage = storage

    async def observe(self) -> Observed:
        root = await self.storage.mountpoint(self.storage.layout.containers)
        jails = await self.runtime.list_jails(under=root)
        containers = await self.storage.list_container_fs()
        roots = {cid: str(root / cid) for cid in containers}
        return Observed(jails={name: info.path for name, info in jails.items()}, container_roots=roots,
                        mounts=await self.runtime.mounted(), interfaces=await self.network.interfaces(),
                        group=self.network.group, container_datasets=frozenset(containers),
                        image_datasets=frozenset(await self.storage.list_images()))

    async def run(self, desired: Desired) -> list[Action]:
        """Observe, plan, apply; return the actions that failed (each also logged)."""
        failed = []
        for action in plan(desired, await self.observe()):
            try:
                await self._apply(action)
            except (HostCommandError, ValueError, OSError) as exc:
                log.warning("reconcile could not %s %s: %s", action.verb, action.target, exc)
                failed.append(action)
        return failed

    async def _apply(self, action: Action) -> None:
        log.info("reconcile: %s %s %s", action.verb, action.target, action.detail)
        if action.verb == "remove_jail":
            await self.runtime.delete(action.target, Path(action.detail))
        elif action.verb == "unmount":
            if any(m.node == action.target for m in await self.runtime.mounted()):
                await self.runtime.commands.run(umount_argv(action.target))
        elif action.verb == "destroy_interface":
            await self.network.destroy_interface(action.target)
        elif action.verb == "create_interface":
            await self.network.create_interface(action.target, action.detail)
        elif action.verb == "add_address":
            await self.network.configure_interface(action.target, [action.detail])
        elif action.verb == "destroy_container_fs":
            await self.storage.remove_container_fs(action.target)
        elif action.verb == "destroy_image":
            await self.storage.remove_image(action.target)
        elif action.verb == "conflict":
            raise ValueError(f"interface {action.target} {action.detail}")
