"""Simulated `ifconfig` and `route`: interfaces and default routes as bookkeeping, per network
stack (the host's, and each vnet jail's). No packet moves.

Refuses as FreeBSD does: an interface that does not exist (in that stack), `addm` of a missing
interface or of one already in a bridge, `deletem` of a non-member, renaming onto a taken name,
destroying an interface that is not a clone, a group name ending in a digit, removing an address
that is not there, moving an interface into a jail that is not a vnet jail, a second default
route, and a default route through a gateway no address reaches.
"""

from __future__ import annotations

import ipaddress

from .state import Refused, State, Unsupported, out

HOST = ""
_CLONERS = ("lo", "bridge", "epair")
_KIND_GROUP = {"lo": "lo", "bridge": "bridge", "epair": "epair"}
_ETHER = "8863<{}BROADCAST,RUNNING,SIMPLEX,MULTICAST>"
_FLAGS = {"lo": "8049<{}LOOPBACK,RUNNING,MULTICAST>", "bridge": "8843<{}BROADCAST,RUNNING,SIMPLEX,MULTICAST>",
          "epair": _ETHER, "ether": _ETHER}


def initial() -> dict:
    """The host at boot: lo0 and em0 (192.0.2.10/24, default route via 192.0.2.1)."""
    return {"ifaces": [
        {"name": "lo0", "kind": "lo", "ctx": HOST, "up": True, "cidrs": ["127.0.0.1/8", "::1/128"], "groups": [],
         "members": [], "description": "", "cloned": False},
        {"name": "em0", "kind": "ether", "ctx": HOST, "up": True, "cidrs": ["192.0.2.10/24"], "groups": [],
         "members": [], "description": "", "cloned": False}],
        "routes": {HOST: {"inet": "192.0.2.1"}}}


def _load(state: State) -> dict:
    return state.load("net", initial())


def _find(data: dict, name: str, ctx: str) -> dict | None:
    return next((i for i in data["ifaces"] if i["name"] == name and i["ctx"] == ctx), None)


def _need(data: dict, name: str, ctx: str) -> dict:
    found = _find(data, name, ctx)
    if found is None:
        raise Refused(f"ifconfig: interface {name} does not exist")
    return found


def _new(data: dict, name: str, kind: str, ctx: str, **extra: object) -> dict:
    record = {"name": name, "kind": kind, "ctx": ctx, "up": False, "cidrs": [], "groups": [], "members": [],
              "description": "", "cloned": True, **extra}
    data["ifaces"].append(record)
    return record


def _clone(data: dict, kind: str, ctx: str) -> dict:
    names = {i["name"] for i in data["ifaces"]}
    unit = 1 if kind == "lo" else 0
    while f"{kind}{unit}" in names or f"{kind}{unit}a" in names:
        unit += 1
    if kind == "epair":
        _new(data, f"epair{unit}b", "epair", ctx, peer=f"epair{unit}a")
        return _new(data, f"epair{unit}a", "epair", ctx, peer=f"epair{unit}b")
    return _new(data, f"{kind}{unit}", kind, ctx)


def _destroy(data: dict, iface: dict) -> None:
    if not iface["cloned"]:
        raise Refused("ifconfig: SIOCIFDESTROY: Invalid argument")
    victims = [iface]
    if iface["kind"] == "epair":
        victims += [i for i in data["ifaces"] if i["name"] == iface["peer"]]
    for victim in victims:
        data["ifaces"].remove(victim)
        for bridge in data["ifaces"]:
            if victim["name"] in bridge["members"]:
                bridge["members"].remove(victim["name"])


def _address(iface: dict, family: str, args: list[str]) -> list[str]:
    """`inet|inet6 <cidr> [alias]`, `... <addr> -alias`, `inet6 [-]ifdisabled`; returns the rest."""
    if args[0] in ("-ifdisabled", "ifdisabled"):
        return args[1:]
    value, rest = args[0], args[1:]
    try:
        parsed = ipaddress.ip_interface(value)
    except ValueError:
        raise Refused(f"ifconfig: {value}: bad value") from None
    if (parsed.version == 6) != (family == "inet6"):
        raise Refused(f"ifconfig: {value}: bad value (wrong address family)")
    if rest[:1] == ["-alias"]:
        match = [c for c in iface["cidrs"] if ipaddress.ip_interface(c).ip == parsed.ip]
        if not match:
            raise Refused("ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")
        iface["cidrs"].remove(match[0])
        return rest[1:]
    if "/" not in value:
        raise Unsupported("an address without a prefix length")
    if str(parsed) not in iface["cidrs"]:
        iface["cidrs"].append(str(parsed))
    iface["up"] = True  # an address brings an interface up
    return rest[1:] if rest[:1] == ["alias"] else rest


def _apply(state: State, data: dict, iface: dict, args: list[str], ctx: str) -> None:
    while args:
        word, args = args[0], args[1:]
        if word in ("up", "down"):
            iface["up"] = word == "up"
        elif word in ("inet", "inet6"):
            args = _address(iface, word, args)
        elif word == "addm":
            _addm(data, iface, args.pop(0), ctx)
        elif word == "deletem":
            member = args.pop(0)
            if member not in iface["members"]:
                raise Refused(f"ifconfig: BRDGDEL {member}: Invalid argument")
            iface["members"].remove(member)
        elif word in ("group", "-group"):
            _group(iface, word, args.pop(0))
        elif word == "description":
            iface["description"] = args.pop(0)
        elif word == "name":
            _rename(data, iface, args.pop(0), ctx)
        elif word in ("vnet", "-vnet"):
            _vnet(state, data, iface, word, args.pop(0), ctx)
            return
        elif word == "destroy":
            _destroy(data, iface)
            return
        else:
            raise Unsupported(f"ifconfig {word}")


def _addm(data: dict, bridge: dict, member: str, ctx: str) -> None:
    if bridge["kind"] != "bridge":
        raise Refused(f"ifconfig: BRDGADD {member}: Invalid argument")
    if _find(data, member, ctx) is None:
        raise Refused(f"ifconfig: BRDGADD {member}: No such file or directory")
    if any(member in i["members"] for i in data["ifaces"] if i["ctx"] == ctx):
        raise Refused(f"ifconfig: BRDGADD {member}: Device busy")
    bridge["members"].append(member)


def _group(iface: dict, word: str, group: str) -> None:
    if group[-1:].isdigit():
        raise Refused("ifconfig: SIOCAIFGROUP: Invalid argument")
    if word == "group" and group not in iface["groups"]:
        iface["groups"].append(group)
    elif word == "-group" and group in iface["groups"]:
        iface["groups"].remove(group)


def _rename(data: dict, iface: dict, new: str, ctx: str) -> None:
    if _find(data, new, ctx) is not None:
        raise Refused("ifconfig: ioctl SIOCSIFNAME (set name): File exists")
    for other in data["ifaces"]:
        other["members"] = [new if m == iface["name"] else m for m in other["members"]]
        if other.get("peer") == iface["name"]:
            other["peer"] = new
    iface["name"] = new


def _vnet(state: State, data: dict, iface: dict, word: str, jail: str, ctx: str) -> None:
    jails = state.load("jails", {"jails": {}})["jails"]
    if jail not in jails or not jails[jail]["vnet"] or ctx != HOST:
        raise Refused("ifconfig: SIOCSIFVNET: Invalid argument")
    if word == "vnet":
        if _find(data, iface["name"], jail) is not None:
            raise Refused("ifconfig: SIOCSIFVNET: File exists")
        for bridge in data["ifaces"]:
            if iface["name"] in bridge["members"]:
                bridge["members"].remove(iface["name"])
        iface["ctx"], iface["up"], iface["cidrs"] = jail, False, []
    else:
        inside = _need(data, iface["name"], jail)
        inside["ctx"], inside["cidrs"], inside["up"] = HOST, [], False


def _show(iface: dict) -> str:
    flags = _FLAGS[iface["kind"]].format("UP," if iface["up"] else "")
    lines = [f"{iface['name']}: flags={flags} metric 0 mtu 1500"]
    if iface["description"]:
        lines.append(f"\tdescription: {iface['description']}")
    for cidr in iface["cidrs"]:
        parsed = ipaddress.ip_interface(cidr)
        if parsed.version == 4:
            mask = f"0x{int(parsed.network.netmask):08x}"
            lines.append(f"\tinet {parsed.ip} netmask {mask} broadcast {parsed.network.broadcast_address}")
        else:
            lines.append(f"\tinet6 {parsed.ip} prefixlen {parsed.network.prefixlen}")
    lines += [f"\tmember: {m} flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>" for m in iface["members"]]
    groups = [_KIND_GROUP[iface["kind"]]] if iface["kind"] in _KIND_GROUP else []
    if groups or iface["groups"]:
        lines.append("\tgroups: " + " ".join(groups + iface["groups"]))
    return "\n".join(lines) + "\n"


def ifconfig(state: State, argv: list[str], context: str = HOST) -> int:
    data = _load(state)
    visible = [i for i in data["ifaces"] if i["ctx"] == context]
    if not argv or argv == ["-a"]:
        out("".join(_show(i) for i in visible))
        return 0
    if argv == ["-l"]:
        out(" ".join(i["name"] for i in visible) + "\n")
        return 0
    if argv[0] == "-g":
        out("".join(f"{i['name']}\n" for i in visible if argv[1] in i["groups"]))
        return 0
    try:  # like ifconfig, each operation sticks even when a later one fails
        if argv[0] in _CLONERS and argv[1:2] == ["create"]:
            created = _clone(data, argv[0], context)
            modules = state.load("kld", [])  # ifconfig loads if_bridge / if_epair on first use
            state.save("kld", sorted({*modules, f"if_{argv[0]}"}))
            out(created["name"] + "\n")
            _apply(state, data, created, argv[2:], context)
        elif argv[1:2] == ["-vnet"] and len(argv) == 3:
            _vnet(state, data, {"name": argv[0]}, "-vnet", argv[2], context)
        else:
            iface = _need(data, argv[0], context)
            if len(argv) == 1:
                out(_show(iface))
                return 0
            _apply(state, data, iface, argv[1:], context)
    finally:
        state.save("net", data)
    return 0


def _reaches(data: dict, gateway: str, ctx: str) -> bool:
    ip = ipaddress.ip_address(gateway)
    return any(ip in ipaddress.ip_interface(c).network and ipaddress.ip_interface(c).ip != ip
               for i in data["ifaces"] if i["ctx"] == ctx and i["up"] for c in i["cidrs"])


def route(state: State, argv: list[str], context: str = HOST) -> int:
    data = _load(state)
    routes = data["routes"].setdefault(context, {})
    family = "inet6" if "-inet6" in argv else "inet"
    words = [a for a in argv if a not in ("-n", "-inet", "-inet6")]
    if words[:2] == ["get", "default"]:
        if family not in routes:
            raise Refused("route: route has not been found")
        gateway = routes[family]
        via = next((i["name"] for i in data["ifaces"] if i["ctx"] == context and _reaches(
            {"ifaces": [i]}, gateway, context)), "")
        out(f"   route to: default\ndestination: default\n       mask: default\n    gateway: {gateway}\n"
            f"        fib: 0\n  interface: {via}\n      flags: <UP,GATEWAY,DONE,STATIC>\n")
        return 0
    if words[:2] == ["add", "default"] and len(words) == 3:
        gateway = words[2]
        if family in routes:
            raise Refused(f"route: writing to routing socket: File exists\n"
                          f"add net default: gateway {gateway} fib 0: route already in table")
        if not _reaches(data, gateway, context):
            raise Refused(f"route: writing to routing socket: Network is unreachable\n"
                          f"add net default: gateway {gateway} fib 0: Network is unreachable")
        routes[family] = gateway
        state.save("net", data)
        out(f"add net default: gateway {gateway}\n")
        return 0
    raise Unsupported(f"route {' '.join(words)}")


def jail_created(state: State, jail: str) -> None:
    """A vnet jail gets its own lo0, down and without an address (FreeBSD's default)."""
    data = _load(state)
    _new(data, "lo0", "lo", jail, cloned=False)
    state.save("net", data)


def jail_removed(state: State, jail: str) -> None:
    """The jail's stack goes away: moved interfaces come back to the host, its lo0 and routes go."""
    data = _load(state)
    for iface in list(data["ifaces"]):
        if iface["ctx"] == jail:
            if iface["cloned"]:
                iface.update(ctx=HOST, cidrs=[], up=False)
            else:
                data["ifaces"].remove(iface)
    data["routes"].pop(jail, None)
    state.save("net", data)
