"""Host-side network devices on Linux, and `LinuxNetworkDriver`: the `NetworkDriver` core's `Networks` uses.

Ownership: every link the daemon creates (network bridges, the host ends of veths) carries the
alias `kleened:<prefix>`. That marker, not the name, decides what the daemon may destroy: a
user's interface that happens to be called `kleene3` is never touched, and two daemons with
different prefixes never touch each other's links.

A network bridge gets:
- `nf_call_iptables`/`nf_call_ip6tables` on, so bridged container-to-container traffic passes the
  inet forward hook where the `icc` and isolation rules live (nftables.py);
- `proxy_arp=1`, so containers whose default route is on-link (loopback networks have no
  gateway address, see docs/networking.md) reach the host and, through it, the rest;
- `route_localnet=1`, which DNAT from the host's 127.0.0.1 to a container needs (with the 127/8
  masquerade rule; the table's input chain drops what it would otherwise let in);
- `fe80::1/64` when the network has IPv6: the router of containers without a gateway6.

A *plug* is one veth pair per endpoint: the host end (`<prefix>v<endpoint id>`) joins the bridge,
or stays unbridged in *routed* mode (custom networks on a non-bridge interface); the container
end (`eth<N>`) is created directly inside the namespace. Commands are batched (`ip -batch -`),
since exec, not netlink, is the cost (linux-runtime.md §4).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kleened.platform.base import HostCommandError, PlugSpec, Sandbox
from kleened.platform.posix import hostcmd

from . import netns

log = logging.getLogger(__name__)

IP = "ip"
PROC_SYS = Path("/proc/sys")
ROUTE_METRIC = 1024  # of the host routes to loopback networks' subnets (see configure_interface)


def set_sysctl(key: str, value: str) -> None:
    """Write `/proc/sys/<key>` (e.g. `net/ipv4/ip_forward`) unless it already holds `value`."""
    path = PROC_SYS / key
    if path.read_text().strip() != value:
        path.write_text(value)
        log.debug("sysctl %s=%s", key, value)


async def _json(argv: Sequence[str]) -> list[dict]:
    out = await hostcmd.run(argv)
    return json.loads(out) if out.strip() else []


async def _batch(lines: Sequence[str]) -> None:
    await hostcmd.run([IP, "-batch", "-"], input=("\n".join(lines) + "\n").encode())


async def link(name: str) -> dict | None:
    """`ip -d -j link show` for one link, or None when there is no such link."""
    try:
        found = await _json([IP, "-d", "-j", "link", "show", "dev", name])
    except HostCommandError as exc:
        if "does not exist" in exc.stderr:
            return None
        raise
    return found[0] if found else None


async def destroy(name: str) -> None:
    """Delete a link (idempotent)."""
    try:
        await hostcmd.run([IP, "link", "del", "dev", name])
    except HostCommandError as exc:
        if "Cannot find device" not in exc.stderr:
            raise


def host_lines(host_if: str, container_if: str, namespace: str, marker: str, bridge: str | None,
               cidrs: Sequence[str]) -> list[str]:
    """`ip -batch` lines for the host side of a plug (see `attach`)."""
    lines = [f"link add {host_if} type veth peer name {container_if} netns {namespace}",
             f"link set dev {host_if} alias {marker}"]
    if bridge is not None:
        lines.append(f"link set dev {host_if} master {bridge}")
    lines.append(f"link set dev {host_if} up")
    if bridge is None:
        for cidr in cidrs:
            ip = ipaddress.ip_interface(cidr).ip
            lines.append(f"route replace {ip}/{ip.max_prefixlen} dev {host_if}")
        if any(ipaddress.ip_interface(c).version == 6 for c in cidrs):
            lines.append(f"addr add {netns.LINK_LOCAL_GATEWAY}/64 dev {host_if} nodad")
    return lines


class LinuxNetworkDriver:
    """`NetworkDriver` on Linux, for one host-name `prefix`: a sandbox is a named netns, a plug a
    veth pair. Both ipnet and vnet are sandboxed: Linux cannot restrict a process sharing the
    host's stack to some of its addresses (docs/networking.md)."""

    sandboxed_drivers = frozenset({"vnet", "ipnet"})

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.marker = f"kleened:{prefix}"

    def netns_name(self, container_id: str) -> str:
        return f"{self.prefix}-{container_id}"

    def veth_name(self, endpoint_id: str) -> str:
        """`<prefix>v<endpoint id...>`, cut to the kernel's 15 characters."""
        return f"{self.prefix}v{endpoint_id}"[:15]

    # --- host facts ----------------------------------------------------------------------------

    async def host_gateway(self) -> str:
        """The interface of the IPv4 default route, "" when there is none (upstream's host gateway)."""
        for route in await _json([IP, "-j", "-4", "route", "show", "default"]):
            if route.get("dev"):
                return str(route["dev"])
        return ""

    async def interface_kind(self, name: str) -> str | None:
        """None: no such interface. Else "bridge", "veth", "dummy", "loopback" or "device"."""
        found = await link(name)
        if found is None:
            return None
        if found.get("link_type") == "loopback":
            return "loopback"
        return str(found.get("linkinfo", {}).get("info_kind") or "device")

    async def is_owned(self, name: str) -> bool:
        found = await link(name)
        return found is not None and found.get("ifalias") == self.marker

    async def owned_interfaces(self) -> list[str]:
        found = await _json([IP, "-j", "link", "show"])
        return sorted(str(entry["ifname"]) for entry in found if entry.get("ifalias") == self.marker)

    async def interface_addresses(self, name: str) -> list[str]:
        """The interface's addresses as cidrs, IPv6 link-local ones left out."""
        out = []
        for entry in await _json([IP, "-j", "addr", "show", "dev", name]):
            for info in entry.get("addr_info", []):
                if info.get("family") in ("inet", "inet6") and info.get("scope") != "link":
                    out.append(f"{info['local']}/{info['prefixlen']}")
        return out

    async def enable_forwarding(self, *, ipv6: bool) -> None:
        """IPv4 forwarding always (as upstream); IPv6 only once a network has an IPv6 subnet,
        because `all.forwarding=1` makes the host ignore router advertisements."""
        set_sysctl("net/ipv4/ip_forward", "1")
        if ipv6:
            set_sysctl("net/ipv6/conf/all/forwarding", "1")

    # --- network interfaces ---------------------------------------------------------------------

    async def create_interface(self, name: str, kind: Literal["loopback", "bridge"]) -> None:
        """A bridge for either kind: a loopback network is a bridge nothing but the containers'
        plugs join (a `lo`-type link cannot be created on Linux)."""
        await _batch([f"link add {name} type bridge nf_call_iptables 1 nf_call_ip6tables 1",
                      f"link set dev {name} alias {self.marker}"])

    async def configure_interface(self, name: str, cidrs: Sequence[str], routes: Sequence[str], *,
                                  ipv6: bool) -> None:
        """Bring the bridge up with its sysctls, `cidrs` (its gateway addresses) and host `routes`
        (subnets no address covers). Idempotent (`replace`), so reconcile can rerun it."""
        set_sysctl(f"net/ipv4/conf/{name}/proxy_arp", "1")
        set_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
        lines = [f"link set dev {name} up"]
        lines += [f"addr replace {cidr} dev {name}" + (" nodad" if ":" in cidr else "") for cidr in cidrs]
        if ipv6:
            lines.append(f"addr replace {netns.LINK_LOCAL_GATEWAY}/64 dev {name} nodad")
        # A high metric: should the subnet already be routed on the host (a LAN), the host's route
        # keeps winning and `replace` cannot clobber it (it matches on prefix and metric).
        lines += [f"route replace {subnet} dev {name} metric {ROUTE_METRIC}" for subnet in routes]
        await _batch(lines)

    async def destroy_interface(self, name: str) -> None:
        found = await link(name)
        if found is None:
            return
        if found.get("ifalias") != self.marker:
            raise ValueError(f"interface '{name}' was not created by kleened; it is left alone")
        await destroy(name)

    # --- sandboxes and plugs --------------------------------------------------------------------

    async def create_sandbox(self, container_id: str) -> Sandbox:
        """A fresh namespace for the container; its handle is the path runc joins."""
        return Sandbox(container_id, await netns.create(self.netns_name(container_id)))

    async def destroy_sandbox(self, container_id: str) -> None:
        await netns.destroy(self.netns_name(container_id))

    async def sandboxes(self) -> list[str]:
        """Ids of the containers that have a namespace of ours."""
        return [name[len(self.prefix) + 1:] for name in netns.names(self.prefix)]

    async def plug(self, sandbox: Sandbox, plug: PlugSpec) -> str:
        """Plug the sandbox into a network through a new veth pair `<prefix>v<endpoint>` /
        `eth<index>`; default routes get metric 100+index, so the first plug's win.

        `plug.bridge` None is routed mode: host routes to each address through the host end,
        proxy ARP on it, `fe80::1` on it, and a proxy ARP entry on the network's interface so
        its segment reaches the container as it would reach an alias upstream. On failure the
        pair is removed.
        """
        host_if = self.veth_name(plug.endpoint_id)
        container_if = f"eth{plug.index}"
        namespace = self.netns_name(sandbox.container_id)
        try:
            # One batch: when a line fails (a missing bridge), the lines before it stay done.
            await _batch(host_lines(host_if, container_if, namespace, self.marker, plug.bridge, plug.cidrs))
            if plug.bridge is None:
                set_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1")
                set_sysctl(f"net/ipv4/conf/{host_if}/route_localnet", "1")
                for ip in _proxied(plug):
                    await hostcmd.run([IP, "neigh", "replace", "proxy", ip, "dev", plug.interface])
            await netns.configure(namespace, netns.container_lines(
                container_if, plug.cidrs, routed=plug.bridge is None, gateway4=plug.gateway4,
                gateway6=plug.gateway6, metric=100 + plug.index))
        except BaseException:
            await self.unplug(host_if, plug, sandbox=sandbox)
            raise
        return host_if

    async def unplug(self, host_end: str, plug: PlugSpec, *, sandbox: Sandbox | None) -> None:
        """Remove a plug (idempotent) and the proxy ARP entries `plug` made for it."""
        for ip in _proxied(plug):
            with contextlib.suppress(HostCommandError):
                await hostcmd.run([IP, "neigh", "del", "proxy", ip, "dev", plug.interface])
        await destroy(host_end)

    # --- address-only containers ------------------------------------------------------------------

    async def add_address(self, interface: str, address: str) -> None:
        cidr = _host_cidr(address)
        if cidr not in await self.interface_addresses(interface):
            await hostcmd.run([IP, "addr", "add", cidr, "dev", interface] + (["nodad"] if ":" in cidr else []))

    async def remove_address(self, interface: str, address: str) -> None:
        cidr = _host_cidr(address)
        if cidr in await self.interface_addresses(interface):
            await hostcmd.run([IP, "addr", "del", cidr, "dev", interface])

    async def set_addresses(self, sandbox: Sandbox, ip4: Sequence[str], ip6: Sequence[str]) -> None:
        """Nothing to do: core never uses address-only mode here (`sandboxed_drivers` covers
        ipnet), and a process sharing Linux's host stack cannot be held to some addresses."""


def _host_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def _proxied(plug: PlugSpec) -> list[str]:
    """The IPv4 addresses a routed plug gets proxy ARP entries for on the network's interface."""
    if plug.bridge is not None or plug.interface == "lo":
        return []
    return _ipv4s(plug.cidrs)


def _ipv4s(cidrs: Sequence[str]) -> list[str]:
    return [str(ipaddress.ip_interface(c).ip) for c in cidrs if ipaddress.ip_interface(c).version == 4]
