"""Network interfaces on FreeBSD as data: ifconfig/route/sysctl command lines and parsers.

Vocabulary (as `core.ipam`): an *address* is an IP without a prefix length, a *cidr* has one.
A network's interface is a `lo` clone (loopback networks), an `if_bridge` (bridge networks) or
an existing interface (custom). A vnet container meets a bridge through an *epair*: the `a` end
joins the bridge on the host, the `b` end is moved into the jail.

Ownership (B6): upstream destroyed any interface that had the name it wanted. Here every
interface kleened creates joins the interface group `<prefix>d` (`kleened` for the default
prefix; `ifconfig -g kleened` lists them) and an epair's host end carries the description
`kleened:<container id>`. Only group members are ever destroyed; a name already taken by
someone else is refused.

Creation is `ifconfig <kind> create` (prints the kernel's name) then, in one more command,
group, description and the wanted name: `ifconfig bridge create name X` would leave an
anonymous `bridgeN` behind when the rename fails, with nothing to find it by.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

EPAIR_DESCRIPTION = "kleened:"  # + container id, on the host end of a container's epair


def owner_group(prefix: str) -> str:
    """The interface group of kleened's interfaces: `<prefix>d` (group names may not end in a digit)."""
    return f"{prefix}d"


def create_argv(kind: str) -> list[str]:
    """`kind`: "lo", "bridge" or "epair"; ifconfig prints the new name (`epairNa` for epairs)."""
    return ["ifconfig", kind, "create"]


def adopt_argv(created: str, *, group: str, name: str | None = None, description: str | None = None) -> list[str]:
    """Tag a just-created interface as ours, then rename it (in that order: see the docstring)."""
    argv = ["ifconfig", created, "group", group]
    argv += ["description", description] if description else []
    argv += ["name", name] if name and name != created else []
    return argv


def up_argv(name: str) -> list[str]:
    """Bridges are not brought up by adding members (B19)."""
    return ["ifconfig", name, "up"]


def destroy_argv(name: str) -> list[str]:
    """Destroying either end of an epair destroys both."""
    return ["ifconfig", name, "destroy"]


def family(cidr: str) -> str:
    return "inet6" if ipaddress.ip_interface(cidr).version == 6 else "inet"


def alias_argv(name: str, cidr: str) -> list[str]:
    return ["ifconfig", name, family(cidr), cidr, "alias"]


def unalias_argv(name: str, address: str) -> list[str]:
    ip = ipaddress.ip_interface(address).ip
    return ["ifconfig", name, "inet6" if ip.version == 6 else "inet", str(ip), "-alias"]


def host_cidr(address: str) -> str:
    """An ipnet alias: the address alone (/32, /128), as upstream puts it on the interface."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def addm_argv(bridge: str, member: str) -> list[str]:
    return ["ifconfig", bridge, "addm", member]


def deletem_argv(bridge: str, member: str) -> list[str]:
    return ["ifconfig", bridge, "deletem", member]


def vnet_argv(name: str, jail: str) -> list[str]:
    return ["ifconfig", name, "vnet", jail]


def reclaim_argv(name: str, jail: str) -> list[str]:
    """Take an interface back from a running vnet jail (disconnect while running)."""
    return ["ifconfig", name, "-vnet", jail]


def epair_ends(created: str) -> tuple[str, str]:
    """`epair5a` (what `ifconfig epair create` prints) -> (`epair5a`, `epair5b`)."""
    if not created.startswith("epair") or not created.endswith("a"):
        raise ValueError(f"unexpected epair name '{created}'")
    return created, created[:-1] + "b"


SHOW_ALL_ARGV = ["ifconfig"]


def show_argv(name: str) -> list[str]:
    return ["ifconfig", name]


def group_argv(group: str) -> list[str]:
    return ["ifconfig", "-g", group]


# --- inside a vnet jail (run through `jail.root_argv`, as root: B3) ------------------------------


def jail_lines(container_if: str, cidrs: Sequence[str], gateway4: str | None, gateway6: str | None) -> list[list[str]]:
    """Configure the jail's end of one epair: addresses first, then its default routes (route(8)
    refuses a gateway that no address reaches). Callers pass gateways for one network only (B4)."""
    lines: list[list[str]] = []
    for cidr in cidrs:
        if family(cidr) == "inet6":
            lines.append(["/sbin/ifconfig", container_if, "inet6", "-ifdisabled"])
        lines.append(["/sbin/ifconfig", container_if, family(cidr), cidr, "alias"])
    lines.append(["/sbin/ifconfig", container_if, "up"])
    if gateway4:
        lines.append(["/sbin/route", "add", "-inet", "default", gateway4])
    if gateway6:
        lines.append(["/sbin/route", "add", "-inet6", "default", gateway6])
    return lines


LOOPBACK_LINE = ["/sbin/ifconfig", "lo0", "inet", "127.0.0.1/8", "up"]  # a vnet jail's lo0 starts down (B19)


# --- host facts --------------------------------------------------------------------------------

DEFAULT_ROUTE_ARGV = ["route", "-n", "get", "-inet", "default"]


def parse_route_interface(text: str) -> str:
    """The `interface:` line of `route -n get default`; "" when there is none."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "interface":
            return value.strip()
    return ""


def sysctl_set_argv(key: str, value: str) -> list[str]:
    return ["sysctl", f"{key}={value}"]


def sysctl_get_argv(*keys: str) -> list[str]:
    return ["sysctl", "-n", *keys]


FORWARDING = "net.inet.ip.forwarding"
FORWARDING6 = "net.inet6.ip6.forwarding"  # upstream never set it (B23)
PFIL_BRIDGE = "net.link.bridge.pfil_bridge"  # pf sees bridged traffic: icc=false needs it


@dataclass
class Interface:
    """What `ifconfig` shows of one interface."""

    name: str
    flags: set[str] = field(default_factory=set)
    cidrs: list[str] = field(default_factory=list)  # link-local IPv6 left out
    groups: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def up(self) -> bool:
        return "UP" in self.flags

    @property
    def kind(self) -> str:
        """"loopback", "bridge", "epair" or "device" (upstream's custom interfaces)."""
        if "lo" in self.groups:
            return "loopback"
        for kind in ("bridge", "epair"):
            if kind in self.groups:
                return kind
        return "device"


def _prefixlen(netmask: str) -> int:
    return bin(int(netmask, 16)).count("1")


def _parse_line(current: Interface, words: list[str]) -> None:
    key = words[0]
    if key == "inet" and "netmask" in words:
        current.cidrs.append(f"{words[1]}/{_prefixlen(words[words.index('netmask') + 1])}")
    elif key == "inet6" and "prefixlen" in words and "%" not in words[1] and not words[1].startswith("fe80:"):
        current.cidrs.append(f"{words[1]}/{words[words.index('prefixlen') + 1]}")
    elif key == "groups:":
        current.groups = words[1:]
    elif key == "member:" and len(words) > 1:
        current.members.append(words[1])
    elif key == "description:":
        current.description = " ".join(words[1:])


def parse_ifconfig(text: str) -> dict[str, Interface]:
    """`ifconfig` or `ifconfig <if>` output -> name -> Interface."""
    out: dict[str, Interface] = {}
    current: Interface | None = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            name, _, rest = line.partition(": flags=")
            flags = rest.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in rest else []
            current = out[name] = Interface(name=name, flags={f for f in flags if f})
        elif current is not None and line.strip():
            _parse_line(current, line.split())
    return out


def parse_group(text: str) -> list[str]:
    return [word for word in text.split() if word]
