"""pf rules for kleened's networks and published ports, rendered from data (no host access).

Upstream's generator (freebsd-backend.md §4, kleene-behaviours.md §6.3) is kept, with its macro
names, so users' pf.conf templates that use `$kleenet_*` keep working:

- macros: `kleenet_host_gw_if` (when the host has a default route), `kleenet_network_interfaces`
  (`{lo0, if1,if2}`, `{lo0}` with no networks) and per network `P = kleenet_<id>`:
  `P_interface`, `P_subnet`, `P_subnet6`, `P_nat_if` (each when set) and `P_all_interfaces`
  (`{if, lo0, epairNa...}`);
- translation: one `nat` per NAT network, one `rdr` per published port, interface and family;
- filtering: per network and family, `block in log` to the subnet, then `pass quick` inside it
  (icc) and `block out quick log` out of it (internal); then per published port a `pass quick`
  on its interfaces and from the other networks.

Fixes of upstream's bugs, each tested in tests/unit/freebsd/test_pf.py:
- B16: `$kleenet_host_gw_if` is only used when it is defined (an undefined macro made pf reject
  the whole ruleset on hosts without a default route);
- B17: the cross-network pass rule of a published port uses the port's protocol (was tcp);
- B18: the template is filled by replacing its three placeholders as text; anything else that
  looks like template code is refused (upstream evaluated the file as Elixir code);
- NAT matches the network's subnets (`from $P_subnet`), not the addresses on its interface, so
  a bridge without an address (gateway `""`) gets NAT for its vnet containers (§3.4), and an
  internal network without NAT blocks traffic to the default-route interface whatever `icc`
  says (upstream forgot that rule for `icc: false`).

Two ways to load the result (firewall.py): upstream's, the whole template rendered into
`pf_config_path` (default /etc/pf.conf); or *anchor mode*, the rules alone loaded into one
anchor (`pfctl -a kleened -f -`) that the host's own pf.conf hooks in with `ANCHOR_HOOKS`: pf's
analogue of the one nftables table the Linux driver owns; /etc/pf.conf is never written.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kleene_protocol.models import Network, PublishedPort

PLACEHOLDERS = ("kleene_macros", "kleene_translation", "kleene_filtering")
DEFAULT_TEMPLATE = """\
# pf.conf for a host running kleened, rendered from the template at pf_config_template_path.
# Add your own rules around the kleened sections; keep its three placeholders as they are.
# kleened rewrites pf_config_path (default /etc/pf.conf) from this file at start-up and
# whenever its networks, containers or published ports change.

### KLEENED MACROS START ###
<%= kleene_macros %>
### KLEENED MACROS END #####

### KLEENED TRANSLATION RULES START ###
<%= kleene_translation %>
### KLEENED TRANSLATION RULES END #####

### KLEENED FILTERING RULES START #####
<%= kleene_filtering %>
### KLEENED FILTERING RULES END #######
"""


def anchor_hooks(anchor: str) -> list[str]:
    """What the host's pf.conf needs for anchor mode: translation hooks first, then the filter hook."""
    return [f'nat-anchor "{anchor}"', f'rdr-anchor "{anchor}"', f'anchor "{anchor}"']


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Ruleset:
    macros: list[str]
    translation: list[str]
    filtering: list[str]

    def text(self) -> str:
        """The rules alone (anchor mode): macros, translation, filtering."""
        return "\n".join([*self.macros, *self.translation, *self.filtering]) + "\n"


def _prefix(network: Network) -> str:
    return f"kleenet_{network.id}"


def _macros(networks: Sequence[Network], epairs: Mapping[str, Sequence[str]], host_gateway: str) -> list[str]:
    out = [f'kleenet_host_gw_if="{host_gateway}"'] if host_gateway else []
    interfaces = ",".join(n.interface for n in networks)
    out.append('kleenet_network_interfaces="{lo0' + (f", {interfaces}" if interfaces else "") + '}"')
    for network in networks:
        p = _prefix(network)
        for key, value in (("interface", network.interface), ("subnet", network.subnet),
                           ("subnet6", network.subnet6), ("nat_if", network.nat)):
            if value:
                out.append(f'{p}_{key}="{value}"')
        members = [network.interface, "lo0", *epairs.get(network.id, ())]
        out.append(f'{p}_all_interfaces="{{{", ".join(members)}}}"')
    return out


def _container_port(host_port: str, container_port: str) -> str:
    """`S:*` as a filter rule needs it: `S` for one host port, `S:S+(B-A)` for a range `A:B`."""
    first, sep, last = container_port.partition(":")
    if sep and last == "*":
        hosts = [int(p) for p in host_port.split(":")]
        return first if len(hosts) == 1 else f"{first}:{int(first) + hosts[-1] - hosts[0]}"
    return container_port


def _families(port: PublishedPort) -> list[tuple[str, str]]:
    return [(family, address) for family, address in (("inet", port.ip_address), ("inet6", port.ip_address6))
            if address]


def _translation(networks: Sequence[Network], ports: Sequence[PublishedPort]) -> list[str]:
    out = []
    for network in networks:
        if network.nat and not network.internal:
            p = _prefix(network)
            for family, subnet, macro in (("inet", network.subnet, "subnet"), ("inet6", network.subnet6, "subnet6")):
                if subnet:
                    out.append(f"nat on ${p}_nat_if {family} from ${p}_{macro} to any -> (${p}_nat_if)")
    for port in ports:
        for family, address in _families(port):
            for interface in port.interfaces:
                out.append(f"rdr on {interface} {family} proto {port.protocol} from any to ({interface}) "
                           f"port {port.host_port} -> {address} port {port.container_port}")
    return out


def _network_filter(network: Network, host_gateway: str) -> list[str]:
    p = _prefix(network)
    out = []
    for subnet_macro, present in (("subnet", network.subnet), ("subnet6", network.subnet6)):
        if not present:
            continue
        subnet = f"${p}_{subnet_macro}"
        out.append(f"block in log from any to {subnet}")
        if network.icc:
            out.append(f"pass quick on ${p}_all_interfaces from {subnet} to {subnet}")
        if network.internal:
            out.append(f"block out quick log on $kleenet_network_interfaces from {subnet}")
            if network.nat:
                out.append(f"block out quick log on ${p}_nat_if from {subnet}")
            elif host_gateway:  # B16: only when the macro exists
                out.append(f"block out quick log on $kleenet_host_gw_if from {subnet}")
    return out


def _port_filter(port: PublishedPort) -> list[str]:
    cport = _container_port(port.host_port, port.container_port)
    out = []
    for family, address in _families(port):
        target = f"{family} proto {port.protocol} from any to {address} port {cport}"
        out += [f"pass quick on {interface} {target}" for interface in port.interfaces]
        out.append(f"pass quick on $kleenet_network_interfaces {target}")  # B17: the port's protocol
    return out


def render(networks: Sequence[Network], ports: Sequence[PublishedPort], *, host_gateway: str = "",
           epairs: Mapping[str, Sequence[str]] | None = None) -> Ruleset:
    """The rules for `networks` (any order; rendered by name, as upstream) and `ports` (in
    container order, addresses resolved); `epairs` maps a network id to the host ends of its
    running vnet containers' epairs."""
    ordered = sorted(networks, key=lambda n: n.name)
    filtering = [rule for n in ordered for rule in _network_filter(n, host_gateway)]
    filtering += [rule for port in ports for rule in _port_filter(port)]
    return Ruleset(macros=_macros(ordered, epairs or {}, host_gateway), translation=_translation(ordered, ports),
                   filtering=filtering)


_EEX = re.compile(r"<%(=?)\s*([A-Za-z_]\w*)?\s*%>")


def render_template(template: str, ruleset: Ruleset) -> str:
    """Fill upstream's template: each placeholder becomes its rules, one per line (an empty
    section leaves an empty line, as upstream). Raises `TemplateError` for a template without
    exactly one of each placeholder, or with any other `<% ... %>` (B18)."""
    sections = {"kleene_macros": ruleset.macros, "kleene_translation": ruleset.translation,
                "kleene_filtering": ruleset.filtering}
    seen = [m.group(2) for m in _EEX.finditer(template) if m.group(1) == "=" and m.group(2) in sections]
    if sorted(seen) != sorted(PLACEHOLDERS):
        raise TemplateError("the pf template must contain each of <%= kleene_macros %>, <%= kleene_translation %> "
                            "and <%= kleene_filtering %> exactly once")

    def fill(match: re.Match[str]) -> str:
        if match.group(1) != "=" or match.group(2) not in sections:
            raise TemplateError(f"the pf template contains '{match.group(0)}': only kleened's three placeholders "
                                "are allowed")
        return "\n".join(sections[match.group(2)])

    text = _EEX.sub(fill, template)
    if "<%" in text:
        raise TemplateError("the pf template contains '<%' outside kleened's three placeholders")
    return text


def load_file_argv(path: str) -> list[str]:
    return ["pfctl", "-f", path]


def check_file_argv(path: str) -> list[str]:
    """Parse only: a ruleset pf would refuse never replaces /etc/pf.conf."""
    return ["pfctl", "-n", "-f", path]


def load_anchor_argv(anchor: str, *, check: bool = False) -> list[str]:
    """The rules come on stdin."""
    return ["pfctl", *(["-n"] if check else []), "-a", anchor, "-f", "-"]


def flush_anchor_argv(anchor: str) -> list[str]:
    return ["pfctl", "-a", anchor, "-F", "all"]


ENABLE_ARGV = ["pfctl", "-e"]


def show_argv(kind: str) -> list[str]:
    """`rules` or `nat` of the main ruleset, as pfctl prints them (to find the anchor hooks)."""
    return ["pfctl", "-s", kind]


def has_hooks(rules: str, nat: str, anchor: str) -> bool:
    """Whether the loaded main ruleset evaluates `anchor` (pfctl prints `anchor "x" all`)."""
    want = [f'nat-anchor "{anchor}"', f'rdr-anchor "{anchor}"']
    return all(w in nat for w in want) and f'anchor "{anchor}"' in rules


def networks_with_subnets(networks: Sequence[Network]) -> list[Network]:
    """Networks whose subnets parse (a broken row must not take the firewall down with it)."""
    out = []
    for network in networks:
        try:
            for subnet in (network.subnet, network.subnet6):
                if subnet:
                    ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            continue
        out.append(network)
    return out
