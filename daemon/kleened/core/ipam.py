"""The pure side of networking: what the store keeps (networks, endpoints), the host driver's
the running state of sandboxed containers (`Live`, `Plug`), config validation with
upstream's messages, upstream's address allocation, published-port specs, default routes per
driver and `/etc/hosts` text.

Nothing here touches the host, so all of it is unit-tested without root (tests/unit/test_ipam.py).

Vocabulary: a *subnet* is a CIDR block (`10.13.37.0/24`); an *address* is one IP written without
a prefix length (`10.13.37.2`), as the API shows it; a *cidr* is an address with the subnet's
prefix length (`10.13.37.2/24`), as interfaces are configured.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from kleene_protocol.models import EndPoint, Network, NetworkConfig, PublishedPort

from ..platform.base import PlugSpec, Sandbox
from .errors import Conflict, InvalidArgument

NETWORK = "network"
ENDPOINT = "endpoint"
AUTO = "<auto>"
HOST_GATEWAY = "<host-gateway>"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Linux accepts any byte but '/', ':' and whitespace in a link name; we also keep out quotes and
# shell/nft specials, since names end up in nft rules and log lines.
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")


class NetworkRecord(Network, kw_only=True):
    """A network as stored: the API object plus what only the daemon needs."""

    created: str
    owned: bool = False  # the daemon created the interface (loopback, bridge) and destroys it
    addresses: list[str] = msgspec.field(default_factory=list)  # cidrs the daemon put on the interface

    def to_api(self) -> Network:
        return Network(**{name: getattr(self, name) for name in Network.__struct_fields__})


class EndpointRecord(msgspec.Struct, kw_only=True):
    """A container's membership of a network; it keeps its addresses while the container is stopped."""

    id: str
    network_id: str
    container_id: str
    ip_address: str
    ip_address6: str
    created: str

    def to_api(self, epair: str | None = None) -> EndPoint:
        return EndPoint(id=self.id, network_id=self.network_id, container_id=self.container_id, epair=epair,
                        ip_address=self.ip_address, ip_address6=self.ip_address6)


@dataclass
class Plug:
    """A running sandboxed container's connection to one network."""

    network_id: str
    host_end: str  # the API's `epair`: a veth on Linux, an epair's host end on FreeBSD
    spec: PlugSpec


@dataclass
class Live:
    """A running container's network: its sandbox and plugs (endpoint id -> plug), or in
    address-only mode the addresses it holds on the networks' interfaces."""

    sandbox: Sandbox | None  # None until the runtime made it (FreeBSD: the jail)
    plugs: dict[str, Plug] = field(default_factory=dict)
    # Address-only mode (ipnet on FreeBSD): endpoint id -> (interface, address) held on the host
    address_only: bool = False
    addresses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


# --- validation -------------------------------------------------------------------------------


def parse_subnet(text: str) -> IPNetwork | None:
    """`""` -> None. Host bits are allowed (`10.0.0.5/24` is `10.0.0.0/24`), as upstream's CIDR parser."""
    if not text:
        return None
    return ipaddress.ip_network(text, strict=False)


def _check(text: str, label: str, version: int, *, gateway: bool) -> None:
    if text == "" or (gateway and text == AUTO):
        return
    try:
        value = ipaddress.ip_address(text) if gateway and "/" not in text else ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Conflict(f'invalid {label}: could not parse cidr block: "{text}"') from None
    if value.version != version:
        raise Conflict(f"invalid {label}: wrong IP protocol")


def validate_config(config: NetworkConfig) -> None:
    """Upstream's checks in upstream's order (subnet, subnet6, gateway, gateway6), plus ours."""
    _check(config.subnet, "subnet", 4, gateway=False)
    _check(config.subnet6, "subnet6", 6, gateway=False)
    _check(config.gateway, "gateway", 4, gateway=True)
    _check(config.gateway6, "gateway6", 6, gateway=True)
    if config.interface and not _IFNAME.fullmatch(config.interface):
        raise Conflict(f"invalid interface name '{config.interface}': use up to 15 letters, digits, '_', '.' and '-'")
    if config.nat not in ("", HOST_GATEWAY) and not _IFNAME.fullmatch(config.nat):
        raise Conflict(f"invalid nat interface name '{config.nat}'")
    if config.type == "custom" and not config.interface:
        raise Conflict("a custom network needs the name of an existing interface")


def overlapping(subnet: str, others: Iterable[NetworkRecord]) -> NetworkRecord | None:
    """The first other network whose subnet (same family) overlaps `subnet`."""
    mine = parse_subnet(subnet)
    if mine is None:
        return None
    for other in others:
        for text in (other.subnet, other.subnet6):
            theirs = parse_subnet(text)
            if theirs is not None and theirs.version == mine.version and theirs.overlaps(mine):  # type: ignore[arg-type]
                return other
    return None


def first_host(subnet: str) -> str:
    """The subnet's network address + 1: upstream's `<auto>` gateway and first candidate."""
    net = parse_subnet(subnet)
    assert net is not None
    return str(net.network_address + 1)


def cidr(address: str, subnet: str) -> str:
    """`address` with the prefix length of `subnet`."""
    net = parse_subnet(subnet)
    assert net is not None
    return f"{address}/{net.prefixlen}"


def bridge_routes(record: NetworkRecord) -> list[str]:
    """The host routes a daemon-made interface needs: its subnets that no address on it covers
    (all of them on a loopback network, none on a bridge with `<auto>` gateways)."""
    covered = [ipaddress.ip_interface(c).network for c in record.addresses]
    nets = [ipaddress.ip_network(s, strict=False) for s in (record.subnet, record.subnet6) if s]
    return [str(n) for n in nets if n not in covered]


def interface_name(prefix: str, taken: set[str]) -> str:
    """The first `<prefix><N>` (N = 0, 1, ...) not in `taken`."""
    n = 0
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


# --- allocation -------------------------------------------------------------------------------


def allocate(subnet: str, in_use: Iterable[str]) -> str | None:
    """Upstream's rule: the first address from network+1 up to the *last* address of the block
    (the broadcast address included) that is not in `in_use`. None when the block is full.

    A /30 therefore holds three containers on a loopback network. The scan is O(len(in_use))
    however large the block, because only used addresses can be skipped.
    """
    net = parse_subnet(subnet)
    assert net is not None
    used = set()
    for text in in_use:
        try:
            used.add(int(ipaddress.ip_address(text.split("/")[0])))
        except ValueError:
            continue
    candidate, last = int(net.network_address) + 1, int(net.broadcast_address)
    while candidate <= last and candidate in used:
        candidate += 1
    if candidate > last:
        return None
    return str(ipaddress.ip_address(candidate) if net.version == 4 else ipaddress.IPv6Address(candidate))


def choose_address(requested: str, subnet: str, in_use: Sequence[str], *, version: int) -> str:
    """What an endpoint gets for `ip_address` (version 4) or `ip_address6` (version 6).

    `""` is none, `"<auto>"` allocates (none when the network has no such subnet), a literal must
    parse. Beyond upstream, a literal must lie in the subnet and be free: upstream accepts
    duplicates, which then break both containers.
    """
    family, label = ("inet", "IPv4") if version == 4 else ("inet6", "IPv6")
    if requested == "" or (requested == AUTO and not subnet):
        return ""
    if not subnet:
        raise Conflict(f"cannot set ip address because there is no {label} subnet defined for this network")
    if requested == AUTO:
        address = allocate(subnet, in_use)
        if address is None:
            raise Conflict(f"no more {family} IP's left in the network")
        return address
    try:
        address_obj = ipaddress.ip_address(requested)
    except ValueError:
        raise Conflict(f"could not parse {family} address {requested}: einval") from None
    if address_obj.version != version:
        raise Conflict(f"could not parse {family} address {requested}: einval")
    net = parse_subnet(subnet)
    if address_obj not in net:  # type: ignore[operator]
        raise Conflict(f"ip address {requested} is not in the network's subnet {subnet}")
    if any(_same(requested, used) for used in in_use):
        raise Conflict(f"ip address {requested} is already in use in the network")
    return str(address_obj)


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b.split("/")[0])
    except ValueError:
        return False


# --- published ports --------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """A parsed published port: host ports `host_first..host_last` go to `container_first` and up."""

    host_first: int
    host_last: int
    container_first: int
    container_last: int  # == container_first + (host_last - host_first) for `N:*`


def _port(text: str) -> int:
    if not text.isdigit():
        raise InvalidArgument("invalid port value (should be in the range 0 - 65535)")
    value = int(text)
    if value > 65535:
        raise InvalidArgument("invalid port value (should be in the range 0 - 65535)")
    return value


def parse_ports(host_port: str, container_port: str) -> PortSpec:
    """Upstream's grammar: host `N` or `N1:N2`; container `N`, `N:*` or `N1:N2`.

    Messages are upstream's. Beyond upstream, a reversed range and a container range whose
    size differs from the host range are refused rather than silently misrouted.
    """
    host = host_port.split(":")
    cont = container_port.split(":")
    if len(host) > 2 or len(cont) > 2:
        raise InvalidArgument("could not decode port publishing specification")
    host_first = _port(host[0])
    host_last = _port(host[1]) if len(host) == 2 else host_first
    container_first = _port(cont[0])
    if len(cont) == 2 and cont[1] == "*":
        container_last = container_first + (host_last - host_first)
    elif len(cont) == 2:
        container_last = _port(cont[1])
    else:
        container_last = container_first
    if host_last < host_first or container_last < container_first or container_last > 65535:
        raise InvalidArgument("invalid port range in port publishing specification")
    if container_last != container_first and container_last - container_first != host_last - host_first:
        raise InvalidArgument("the host and container port ranges of a published port must have the same size")
    return PortSpec(host_first, host_last, container_first, container_last)


def check_ports(driver: str, ports: Sequence[PublishedPort], host_gateway: str) -> list[PublishedPort]:
    """Upstream's create-time checks; `interfaces: []` becomes `[host_gateway]` (if known)."""
    if ports and driver in ("host", "disabled"):
        raise InvalidArgument(f"cannot publish ports of a container using the '{driver}' network driver")
    for port in ports:
        parse_ports(port.host_port, port.container_port)
    for i, port in enumerate(ports):
        if port_overlap(port, ports[:i]) is not None:
            raise InvalidArgument(f"host port {port.host_port}/{port.protocol} is published twice")
    default = [host_gateway] if host_gateway else []
    return [p if p.interfaces else msgspec.structs.replace(p, interfaces=default) for p in ports]


def port_overlap(port: PublishedPort, others: Iterable[PublishedPort]) -> PublishedPort | None:
    """The first of `others` that takes a host port `port` wants (same protocol, overlapping range).

    Interfaces do not matter: every published port is also reachable through the host's
    127.0.0.1, so two containers can never share a host port and protocol.
    """
    spec = parse_ports(port.host_port, port.container_port)
    for other in others:
        if other.protocol != port.protocol:
            continue
        taken = parse_ports(other.host_port, other.container_port)
        if spec.host_first <= taken.host_last and taken.host_first <= spec.host_last:
            return other
    return None


def first_addresses(endpoints: Sequence[EndpointRecord]) -> tuple[str, str]:
    """The first IPv4 and first IPv6 address among `endpoints` (in connection order): upstream's
    target of a container's published ports."""
    ip4 = next((e.ip_address for e in endpoints if e.ip_address), "")
    ip6 = next((e.ip_address6 for e in endpoints if e.ip_address6), "")
    return ip4, ip6


def with_addresses(ports: Sequence[PublishedPort], ip4: str, ip6: str) -> list[PublishedPort]:
    return [msgspec.structs.replace(p, ip_address=ip4, ip_address6=ip6) for p in ports]


# --- routes -----------------------------------------------------------------------------------


def default_routes(driver: str, network: NetworkRecord, endpoint: EndpointRecord, on_interface: Sequence[str],
                   *, bridged: bool) -> tuple[str | None, str | None]:
    """(gateway4, gateway6) for a plug: None no default route, "" on-link (IPv4), else the router.

    vnet: the network's gateway, as upstream (none when it has none). ipnet shares the host's
    stack upstream, so it routes through the host: the interface's own address in the subnet
    when it has one (a bridge's `<auto>` gateway), else on-link for IPv4 (the host answers ARP)
    and `fe80::1` for IPv6 (on our bridges and routed plugs; a custom bridge has none).
    """
    out: list[str | None] = []
    for version, address, subnet, configured in ((4, endpoint.ip_address, network.subnet, network.gateway),
                                                  (6, endpoint.ip_address6, network.subnet6, network.gateway6)):
        if not address:
            out.append(None)
        elif driver == "vnet":
            out.append(configured if configured not in ("", AUTO) else None)
        else:
            net = ipaddress.ip_network(subnet, strict=False)
            ours = [ipaddress.ip_interface(c) for c in on_interface]
            mine = [str(i.ip) for i in ours if i.version == version and i.ip in net]
            fallback = "" if version == 4 else ("fe80::1" if network.owned or not bridged else None)
            out.append(mine[0] if mine else fallback)
    return out[0], out[1]


# --- /etc/hosts -------------------------------------------------------------------------------


def hosts_for(container_id: str, names: Mapping[str, tuple[str, ...]], endpoints: Sequence[EndpointRecord]) -> str:
    """A container's `/etc/hosts`: localhost, its own names, then the containers it shares a
    network with (by their address on that network). `names` maps container ids to names.

    When the container has no address its own names map to 127.0.1.1 (Debian's convention), so
    looking up its own hostname still works.
    """
    mine = [e for e in endpoints if e.container_id == container_id]
    networks = {e.network_id for e in mine}
    own_names = " ".join(names.get(container_id, (container_id,)))
    lines = ["# written by kleened; rewritten when the container's networks change",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    own = [f"{a}\t{own_names}" for e in mine for a in (e.ip_address, e.ip_address6) if a]
    lines += own or [f"127.0.1.1\t{own_names}"]
    for e in endpoints:
        if e.network_id in networks and e.container_id != container_id and e.container_id in names:
            peer = " ".join(names[e.container_id])
            lines += [f"{a}\t{peer}" for a in (e.ip_address, e.ip_address6) if a and f"{a}\t{peer}" not in lines]
    return "\n".join(lines) + "\n"
