"""The daemon's one nftables table, `inet <prefix>`: rendered from data, loaded atomically.

`render()` is pure (unit-tested without root): networks and published ports in, ruleset text
out. `apply()` loads it with a single `nft -f -` transaction that creates, deletes and re-adds
the table, so a reload never leaves a half-built table and never touches other tables (the
host's own firewall, docker's, another kleened's with another prefix).

What the table does (the Linux reading of upstream's pf rules, see docs/networking.md):
- prerouting/output (nat): DNAT of published ports; prerouting only on the port's chosen
  interfaces (upstream's `rdr on <if>`), output for the host's own connections (127.0.0.1 and its
  other addresses; upstream has no loopback access);
- postrouting (nat): masquerade of each NAT network towards its nat interface, and of DNATed
  connections from 127/8 (which also needs `route_localnet=1` on the bridge, see netdev.py);
- forward (filter): replies pass; internal networks cannot send outside their subnet; published
  container ports are open to everyone else; `icc` allows or drops traffic inside a subnet;
  anything else addressed to a subnet is dropped (networks are isolated from each other);
- input (filter): packets for 127/8 that did not come from `lo` and are not replies are dropped,
  because `route_localnet=1` would otherwise let containers reach the host's loopback services.

Bridged traffic reaches the inet forward hook because bridges are created with
`nf_call_iptables 1` (br_netfilter). nft 1.0.6 pitfall: `}` must not follow a rule on one line.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence

from kleene_protocol.models import Network, PublishedPort
from kleened.platform.posix import hostcmd

log = logging.getLogger(__name__)

NFT = "nft"


def _q(name: str) -> str:
    return f'"{name}"'


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _ports(host_port: str, container_port: str) -> tuple[int, int, int, int] | None:
    """(host_first, host_last, container_first, container_last) of a validated spec, or None."""
    try:
        host = [int(p) for p in host_port.split(":")]
        cont = container_port.split(":")
        h1, h2 = host[0], host[-1]
        c1 = int(cont[0])
        c2 = c1 + (h2 - h1) if len(cont) == 2 and cont[1] == "*" else int(cont[-1])
    except (ValueError, IndexError):
        return None
    return h1, h2, c1, c2


def _dnat(proto: str, ports: tuple[int, int, int, int], address: str, version: int) -> str:
    """`<proto> dport ... dnat ...` for one published port towards `address`."""
    h1, h2, c1, c2 = ports
    family = "ip" if version == 4 else "ip6"
    shown = address if version == 4 else f"[{address}]"
    match = f"{proto} dport {_span(h1, h2)}"
    if h1 == h2 or c1 == c2:
        return f"{match} dnat {family} to {shown}:{c1}"
    if c1 == h1:
        return f"{match} dnat {family} to {address}"  # ports unchanged
    # A shifted range (pf's `port 80:*`): NAT ranges pick any port, so map each port explicitly.
    elements = ", ".join(f"{h} : {address} . {c1 + h - h1}" for h in range(h1, h2 + 1))
    return f"{match} dnat {family} to {proto} dport map {{ {elements} }}"


def _subnets(networks: Sequence[Network], version: int) -> list[tuple[Network, str]]:
    out = []
    for network in networks:
        text = network.subnet if version == 4 else network.subnet6
        if text:
            out.append((network, str(ipaddress.ip_network(text, strict=False))))
    return out


def render(table: str, networks: Sequence[Network], ports: Sequence[PublishedPort]) -> str:
    """The whole table for `networks` and the published `ports` (addresses already resolved)."""
    pre: list[str] = []
    out: list[str] = []
    post: list[str] = []
    fwd: list[str] = ["ct state established,related accept"]
    by_family = {4: _subnets(networks, 4), 6: _subnets(networks, 6)}

    for version, family in ((4, "ip"), (6, "ip6")):
        for network, subnet in by_family[version]:
            if network.internal:
                fwd.append(f"{family} saddr {subnet} {family} daddr != {subnet} counter drop")
    for port in ports:
        spec = _ports(port.host_port, port.container_port)
        if spec is None:
            log.warning("skipping an invalid published port %s -> %s", port.host_port, port.container_port)
            continue
        for version, family, nfproto, address in ((4, "ip", "ipv4", port.ip_address),
                                                  (6, "ip6", "ipv6", port.ip_address6)):
            if not address:
                continue
            dnat = _dnat(port.protocol, spec, address, version)
            for interface in port.interfaces:
                pre.append(f"iifname {_q(interface)} meta nfproto {nfproto} fib daddr type local {dnat}")
            not_lo = "" if version == 4 else "ip6 daddr != ::1 "  # ::1 cannot leave the host (no route_localnet)
            out.append(f"meta nfproto {nfproto} {not_lo}fib daddr type local {dnat}")
            fwd.append(f"{family} daddr {address} {port.protocol} dport {_span(spec[2], spec[3])} accept")
    for version, family in ((4, "ip"), (6, "ip6")):
        for network, subnet in by_family[version]:
            verdict = "accept" if network.icc else "counter drop"
            fwd.append(f"{family} saddr {subnet} {family} daddr {subnet} {verdict}")
    for version, family in ((4, "ip"), (6, "ip6")):
        for _network, subnet in by_family[version]:
            fwd.append(f"{family} daddr {subnet} counter drop")

    if by_family[4]:
        subnets = ", ".join(subnet for _n, subnet in by_family[4])
        post.append(f"ip saddr 127.0.0.0/8 ip daddr {{ {subnets} }} ct status dnat masquerade")
    for version, family in ((4, "ip"), (6, "ip6")):
        for network, subnet in by_family[version]:
            if network.nat and not network.internal:
                post.append(f"{family} saddr {subnet} oifname {_q(network.nat)} masquerade")

    def chain(name: str, head: str, rules: list[str]) -> list[str]:
        return [f"\tchain {name} {{", f"\t\t{head}", *(f"\t\t{rule}" for rule in rules), "\t}"]

    lines = [
        f"table inet {table} {{",
        *chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre),
        *chain("output", "type nat hook output priority -100; policy accept;", out),
        *chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post),
        *chain("forward", "type filter hook forward priority filter; policy accept;", fwd),
        *chain("input", "type filter hook input priority filter; policy accept;",
               ['iifname != "lo" ip daddr 127.0.0.0/8 ct state != { established, related } counter drop']),
        "}",
    ]
    return "\n".join(lines) + "\n"


def transaction(table: str, text: str) -> str:
    """Replace `table` by `text` in one transaction (`table {}` first so the delete cannot fail)."""
    return f"table inet {table} {{}}\ndelete table inet {table}\n{text}"


async def apply(table: str, text: str) -> None:
    await hostcmd.run([NFT, "-f", "-"], input=transaction(table, text).encode())


async def remove(table: str) -> None:
    await hostcmd.run([NFT, "-f", "-"], input=transaction(table, "").encode())


async def check(table: str, text: str) -> None:
    """Parse and type-check without loading (`nft -c`): what the unit tests use when nft exists."""
    await hostcmd.run([NFT, "-c", "-f", "-"], input=transaction(table, text).encode())


class NftablesFirewall:
    """`Firewall` on Linux: the one table `<prefix>` the daemon owns, replaced whole each time.
    nftables needs neither the host gateway nor the plugs' names: its rules match on subnets
    and the bridges' names."""

    def __init__(self, prefix: str) -> None:
        self.table = prefix

    async def apply(self, networks: Sequence[Network], ports: Sequence[PublishedPort], *, host_gateway: str,
                    plugs: Mapping[str, Sequence[str]]) -> None:
        await apply(self.table, render(self.table, networks, ports))

    async def remove(self) -> None:
        await remove(self.table)
