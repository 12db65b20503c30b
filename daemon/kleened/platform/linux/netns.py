"""Named network namespaces: create, destroy, list, and what is configured inside them.

A vnet/ipnet container runs in the named netns `<prefix>-<container id>` (`/run/netns/...`),
which runc joins by path. runc configures nothing in a joined namespace, so `lo` is brought up
here. Deleting the namespace also deletes the container ends of its veths (and so the pairs),
asynchronously once no process is left in it (linux-runtime.md §4).

IPv6 addresses are added with `nodad`: duplicate detection would leave them unusable for about
two seconds after start, and the daemon already guarantees uniqueness.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from kleened.platform.base import HostCommandError
from kleened.platform.posix import hostcmd

log = logging.getLogger(__name__)

IP = "ip"
NETNS_DIR = Path("/run/netns")
LINK_LOCAL_GATEWAY = "fe80::1"  # on the host end of every plug: the IPv6 router when no gateway6 is set


def path_of(name: str) -> str:
    return str(NETNS_DIR / name)


def names(prefix: str) -> list[str]:
    """Our namespaces: those named `<prefix>-...`."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{prefix}-"))
    except FileNotFoundError:
        return []


async def create(name: str) -> str:
    """A fresh namespace `name` with `lo` up; a stale one of that name is replaced."""
    if os.path.exists(path_of(name)):
        await destroy(name)
    await hostcmd.run([IP, "netns", "add", name])
    try:
        await hostcmd.run([IP, "-n", name, "link", "set", "dev", "lo", "up"])
    except BaseException:
        await destroy(name)
        raise
    return path_of(name)


async def destroy(name: str) -> None:
    """Delete the namespace (idempotent)."""
    try:
        await hostcmd.run([IP, "netns", "del", name])
    except HostCommandError as exc:
        if os.path.exists(path_of(name)):
            raise
        log.debug("netns already gone: %s", exc)


def container_lines(container_if: str, cidrs: Sequence[str], *, routed: bool, gateway4: str | None,
                    gateway6: str | None, metric: int) -> list[str]:
    """`ip -batch` lines that configure the container end of a plug (see `netdev.attach`).

    Routed mode (no bridge behind the host end): IPv4 stays on-link with the subnet's prefix
    (the host end answers ARP for every peer), IPv6 gets a /128 and the subnet through
    `fe80::1`, because Linux has no proxy NDP without per-address entries.
    """
    lines = []
    for cidr in cidrs:
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 6 and routed:
            lines.append(f"addr add {iface.ip}/128 dev {container_if} nodad")
        else:
            lines.append(f"addr add {cidr} dev {container_if}" + (" nodad" if iface.version == 6 else ""))
    lines.append(f"link set dev {container_if} up")
    for cidr in cidrs:
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 6 and routed:
            lines.append(f"route add {iface.network} via {LINK_LOCAL_GATEWAY} dev {container_if}")
    if gateway4 == "":
        lines.append(f"route add default dev {container_if} metric {metric}")  # on-link: the host answers ARP
    elif gateway4:
        lines.append(f"route add default via {gateway4} dev {container_if} metric {metric}")
    if gateway6:
        lines.append(f"route add ::/0 via {gateway6} dev {container_if} metric {metric}")
    return lines


async def configure(name: str, lines: Sequence[str]) -> None:
    """Run `ip -batch` lines inside the namespace (one exec)."""
    await hostcmd.run([IP, "-n", name, "-batch", "-"], input=("\n".join(lines) + "\n").encode())
