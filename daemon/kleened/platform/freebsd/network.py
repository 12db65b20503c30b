"""`FreeBSDNetworkDriver`: the `NetworkDriver` on FreeBSD: network interfaces, ipnet aliases and
vnet epairs on the host (netif.py has the command lines and the ownership rules).

How the neutral interface maps here, and why:
- the *sandbox* of a vnet container is its jail, which must exist before an epair end can be
  moved into it: `create_sandbox` returns None (`JailRuntime.create` makes the jail, and the
  sandbox's handle is the jail's name), `plug` runs after it and configures the jail's end from
  inside, as root; only the plug with index 0 gets default routes, one per family (B3, B4);
- ipnet is *address-only* (not in `sandboxed_drivers`): its addresses are aliases on the
  network's interface plus the jail's `ip4.addr`/`ip6.addr` (`add_address`, `set_addresses`),
  in their own families (B7);
- interfaces are never destroyed and recreated at start-up: `create_interface` refuses a name
  someone else holds and `configure_interface` adds only what is missing, so running jails keep
  their aliases and bridge memberships across a daemon restart (B5, B6).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Literal

import trio

from kleened.platform.base import HostCommandError, PlugSpec, Sandbox

from . import jail, netif
from .command import Commands

log = logging.getLogger(__name__)
_UNDO_TIMEOUT = 30.0
KINDS = {"loopback": "lo", "bridge": "bridge"}


class FreeBSDNetworkDriver:
    """Interfaces of one kleened (its `prefix` names the ownership group)."""

    sandboxed_drivers = frozenset({"vnet"})

    def __init__(self, commands: Commands, prefix: str) -> None:
        self.commands = commands
        self.prefix = prefix
        self.group = netif.owner_group(prefix)

    # --- host facts ----------------------------------------------------------------------------

    async def host_gateway(self) -> str:
        """The interface of the IPv4 default route; "" when there is none."""
        try:
            return netif.parse_route_interface(await self.commands.run(netif.DEFAULT_ROUTE_ARGV))
        except HostCommandError:
            return ""

    async def interfaces(self) -> dict[str, netif.Interface]:
        return netif.parse_ifconfig(await self.commands.run(netif.SHOW_ALL_ARGV))

    async def interface(self, name: str) -> netif.Interface | None:
        try:
            return netif.parse_ifconfig(await self.commands.run(netif.show_argv(name))).get(name)
        except HostCommandError:
            return None

    async def interface_kind(self, name: str) -> str | None:
        found = await self.interface(name)
        return None if found is None else found.kind

    async def is_owned(self, name: str) -> bool:
        found = await self.interface(name)
        return found is not None and self.group in found.groups

    async def owned_interfaces(self) -> list[str]:
        try:
            return sorted(netif.parse_group(await self.commands.run(netif.group_argv(self.group))))
        except HostCommandError:
            return []  # no interface in the group yet

    async def interface_addresses(self, name: str) -> list[str]:
        found = await self.interface(name)
        return [] if found is None else list(found.cidrs)

    async def enable_forwarding(self, *, ipv6: bool) -> None:
        """IPv4 always (upstream), IPv6 when a network has an IPv6 subnet (B23)."""
        await self.commands.run(netif.sysctl_set_argv(netif.FORWARDING, "1"))
        if ipv6:
            await self.commands.run(netif.sysctl_set_argv(netif.FORWARDING6, "1"))

    # --- network interfaces ----------------------------------------------------------------------

    async def create_interface(self, name: str, kind: Literal["loopback", "bridge"]) -> None:
        """A `lo` clone ("loopback") or an `if_bridge` ("bridge") named `name`, tagged as ours.
        Refuses a name held by an interface that is not ours (B6); ours is left as it is."""
        found = await self.interface(name)
        if found is not None:
            if self.group in found.groups:
                return
            raise ValueError(f"interface '{name}' already exists and was not created by kleened")
        created = (await self.commands.run(netif.create_argv(KINDS[kind]))).strip()
        try:
            await self.commands.run(netif.adopt_argv(created, group=self.group, name=name))
        except BaseException:
            await self._destroy_quietly(created)
            raise
        if kind == "bridge":
            # pf sees bridged traffic, which `icc: false` and `internal` on bridges depend on
            # (upstream's CI set it by hand). The OID exists once if_bridge is loaded: now.
            await self.commands.run(netif.sysctl_set_argv(netif.PFIL_BRIDGE, "1"))

    async def configure_interface(self, name: str, cidrs: Sequence[str], routes: Sequence[str] = (), *,
                                  ipv6: bool = False) -> None:
        """Add the addresses `name` lacks (a bridge's `<auto>` gateways) and bring it up (B19).
        Idempotent: start-up reconcile reruns it on live interfaces (B5). `routes` and `ipv6`
        are the Linux bridge's needs: here the containers' aliases sit on the interface itself."""
        present = set(await self.interface_addresses(name))
        for cidr in cidrs:
            if cidr not in present:
                await self.commands.run(netif.alias_argv(name, cidr))
        await self.commands.run(netif.up_argv(name))

    async def destroy_interface(self, name: str) -> None:
        """Destroy one of our interfaces (members of a bridge are removed first); idempotent.
        An interface that is not ours is never touched."""
        found = await self.interface(name)
        if found is None:
            return
        if self.group not in found.groups:
            raise ValueError(f"interface '{name}' was not created by kleened; it is left alone")
        for member in found.members:
            with contextlib.suppress(HostCommandError):
                await self.commands.run(netif.deletem_argv(name, member))
        await self.commands.run(netif.destroy_argv(name))

    async def _destroy_quietly(self, name: str) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_UNDO_TIMEOUT):
            try:
                await self.commands.run(netif.destroy_argv(name))
            except HostCommandError as exc:
                log.warning("could not destroy interface %s, it leaked: %s", name, exc)

    # --- ipnet: addresses only -------------------------------------------------------------------

    async def add_address(self, interface: str, address: str) -> None:
        """`<address>/32` (or /128) on the network's interface, unless already there."""
        cidr = netif.host_cidr(address)
        if cidr not in await self.interface_addresses(interface):
            await self.commands.run(netif.alias_argv(interface, cidr))

    async def remove_address(self, interface: str, address: str) -> None:
        """Check-then-act, as upstream: stop and the exit handler may both clean up."""
        if netif.host_cidr(address) in await self.interface_addresses(interface):
            await self.commands.run(netif.unalias_argv(interface, address))

    async def set_addresses(self, sandbox: Sandbox, ip4: Sequence[str], ip6: Sequence[str]) -> None:
        """Replace a running ipnet jail's address lists, both families (B7)."""
        await self.commands.run(jail.modify_argv(sandbox.handle, jail.addresses_params(ip4, ip6)))

    # --- vnet: the jail is the sandbox -----------------------------------------------------------

    async def create_sandbox(self, container_id: str) -> Sandbox | None:
        """None: the vnet jail `JailRuntime.create` makes is the sandbox."""
        return None

    async def destroy_sandbox(self, container_id: str) -> None:
        """Nothing: `jail -r` (the runtime's) removes the jail and returns the epair ends."""

    async def sandboxes(self) -> list[str]:
        """None of ours outlive their jails (start-up reconcile removes kleened's jails)."""
        return []

    async def plug(self, sandbox: Sandbox, plug: PlugSpec) -> str:
        """Connect the (existing) vnet jail to `plug.bridge` with a new epair; return its host
        end (`epairNa`, the API's `epair`). The first plug (index 0) also brings the jail's lo0
        up (B19) and gets the default routes (B4: one per family). On failure or cancellation
        the epair is destroyed."""
        if plug.bridge is None:
            raise ValueError("vnet containers connect to bridge networks only")
        first = plug.index == 0
        if first:
            await self.commands.run(jail.root_argv(sandbox.handle, *netif.LOOPBACK_LINE))
        return await self._plug_epair(sandbox.handle, sandbox.container_id, bridge=plug.bridge, cidrs=plug.cidrs,
                                      gateway4=plug.gateway4 if first else None,
                                      gateway6=plug.gateway6 if first else None)

    async def unplug(self, host_end: str, plug: PlugSpec, *, sandbox: Sandbox | None) -> None:
        """Disconnect (idempotent): the jail's end is taken back while the jail runs."""
        assert plug.bridge is not None
        await self._unplug_epair(host_end, bridge=plug.bridge, name=sandbox.handle if sandbox else None)

    async def _plug_epair(self, name: str, container_id: str, *, bridge: str, cidrs: Sequence[str],
                          gateway4: str | None, gateway6: str | None) -> str:
        created = (await self.commands.run(netif.create_argv("epair"))).strip()
        host_end, jail_end = netif.epair_ends(created)
        try:
            await self.commands.run(netif.adopt_argv(
                host_end, group=self.group, description=netif.EPAIR_DESCRIPTION + container_id))
            await self.commands.run(netif.addm_argv(bridge, host_end))
            await self.commands.run(netif.up_argv(host_end))
            await self.commands.run(netif.vnet_argv(jail_end, name))
            for line in netif.jail_lines(jail_end, cidrs, gateway4, gateway6):
                await self.commands.run(jail.root_argv(name, *line))
        except BaseException:
            await self._destroy_quietly(host_end)
            raise
        return host_end

    async def _unplug_epair(self, host_end: str, *, bridge: str, name: str | None) -> None:
        """Disconnect: take the jail's end back (when `name` runs), leave the bridge, destroy
        the pair (both ends). Idempotent."""
        found = await self.interface(host_end)
        if found is None:
            return
        if name is not None:
            with contextlib.suppress(HostCommandError):  # the jail may be gone: the end came back
                await self.commands.run(netif.reclaim_argv(netif.epair_ends(host_end)[1], name))
        bridge_if = await self.interface(bridge)
        if bridge_if is not None and host_end in bridge_if.members:
            await self.commands.run(netif.deletem_argv(bridge, host_end))
        await self.commands.run(netif.destroy_argv(host_end))

    async def epairs(self) -> dict[str, str]:
        """Our epairs' host ends -> the container id in their description."""
        out = {}
        for name, found in (await self.interfaces()).items():
            if self.group in found.groups and found.description.startswith(netif.EPAIR_DESCRIPTION):
                out[name] = found.description.removeprefix(netif.EPAIR_DESCRIPTION)
        return out
