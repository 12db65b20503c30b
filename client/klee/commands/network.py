"""`klee network ...`: networks are found by id, id prefix or name.

| command                                | request                                              |
|----------------------------------------|------------------------------------------------------|
| create [OPTIONS] NAME                  | POST /networks/create NetworkConfig -> 201           |
| connect [--ip IP] [--ip6 IP] NET CONT  | POST /networks/connect EndPointConfig -> 204         |
| disconnect NETWORK CONTAINER           | POST /networks/{net}/disconnect/{cont} -> 204        |
| ls                                     | GET /networks/list                                   |
| inspect NETWORK                        | GET /networks/{ident}/inspect                        |
| rm NETWORK...                          | DELETE /networks/{ident}, in order                   |
| prune [-f]                             | POST /networks/prune                                 |

As upstream, `--nat` and `--icc` take a value (`--nat false`); `--no-nat` and `--no-icc`, which
upstream's help mentions but does not accept, work too. Gateways are sent only for bridge
networks (`auto` -> `<auto>`); other types get `""`, as upstream klee does.
"""

from __future__ import annotations

from typing import Any

import click

from klee.commands.common import (
    inspect_command,
    listing_options,
    print_listing,
    prune_command,
    reply_id,
    reply_list,
)
from klee.completion import complete_choices, complete_containers, complete_networks
from klee.connection import api_path
from klee.errors import UsageError
from klee.printing import Column
from klee.session import Session, pass_session

COLUMNS = (
    Column("ID", style="cyan"),
    Column("NAME", style="bold aquamarine1"),
    Column("TYPE", style="bright_white"),
    Column("SUBNET", style="bold aquamarine1"),
)
NETWORK_TYPES = ("loopback", "bridge", "custom")
AUTO = "<auto>"
HOST_GATEWAY = "<host-gateway>"


@click.group(name="network")
def network() -> None:
    """Manage networks"""


@network.command(name="create", no_args_is_help=True)
@click.option(
    "--type",
    "-t",
    "type_",
    default="loopback",
    show_default=True,
    shell_complete=complete_choices(*NETWORK_TYPES),
    help="What kind of network should be created. Possible values are 'bridge', 'loopback', and 'custom'.",
)
@click.option(
    "--interface",
    "-i",
    default="",
    help="Name of the interface used on the host for the network. If not set the interface name is kleened's "
    "'host_prefix' (default 'kleene') postfixed with an integer. If `type` is 'custom' it must name an existing "
    "interface.",
)
@click.option("--subnet", default="", help="Subnet in CIDR format for the network")
@click.option("--subnet6", default="", help="IPv6 subnet in CIDR format for the network")
@click.option(
    "--gw",
    default="auto",
    help="Bridge only. The default IPv4 router of 'vnet' containers, if `subnet` is set. 'auto' (default) "
    'adds the first IP of `subnet` to the bridge and uses it as the gateway; `--gw=""` adds no gateway.',
)
@click.option(
    "--gw6",
    default="auto",
    help="Bridge only. The default IPv6 router of 'vnet' containers, if `subnet6` is set. See `gw`.",
)
@click.option(
    "--nat",
    type=click.BOOL,
    default=True,
    metavar="bool",
    help="Whether or not to use NAT for the network's outgoing traffic (`--nat false` or `--no-nat` disables it).",
)
@click.option("--no-nat", "no_nat", is_flag=True, default=False, hidden=True)
@click.option(
    "--nat-if",
    default=None,
    metavar="string",
    help="Interface to NAT the IPv4 traffic to. Defaults to the host's gateway interface. Ignored without NAT.",
)
@click.option(
    "--icc",
    type=click.BOOL,
    default=True,
    metavar="bool",
    show_default=True,
    help="Whether or not to enable connectivity between containers within the same network.",
)
@click.option("--no-icc", "no_icc", is_flag=True, default=False, hidden=True)
@click.option(
    "--internal",
    is_flag=True,
    default=False,
    help="Whether or not the network is internal, i.e., not allowing outgoing upstream traffic",
)
@click.argument("name")
@pass_session
def create(session: Session, name: str, **options: Any) -> None:
    """Create a new network."""
    reply = session.client.post("/networks/create", body=network_config(name, options), ok=(201,))
    session.out.line(reply_id(reply))


def network_config(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The `NetworkConfig` body of `POST /networks/create`, as upstream klee builds it."""
    network_type = options["type_"]
    if network_type not in NETWORK_TYPES:
        allowed = ", ".join(f"'{choice}'" for choice in NETWORK_TYPES)
        raise UsageError(f"Error! '{network_type}' is not a valid network type ({allowed})")
    gateways = {}
    for key, value in (("gateway", options["gw"]), ("gateway6", options["gw6"])):
        gateways[key] = (AUTO if value == "auto" else value) if network_type == "bridge" else ""
    nat = options["nat"] and not options["no_nat"]
    return {
        "name": name,
        "type": network_type,
        "interface": options["interface"],
        "subnet": options["subnet"],
        "subnet6": options["subnet6"],
        **gateways,
        "nat": (options["nat_if"] or HOST_GATEWAY) if nat else "",
        "icc": options["icc"] and not options["no_icc"],
        "internal": options["internal"],
    }


@network.command(name="connect", no_args_is_help=True)
@click.option(
    "--ip",
    default=None,
    help="IPv4 address used for the container. If omitted and NETWORK has an IPv4 subnet, an unused ip is "
    "allocated. Otherwise it is ignored.",
)
@click.option(
    "--ip6",
    default=None,
    help="IPv6 address used for the container. If omitted and NETWORK has an IPv6 subnet, an unused ip is "
    "allocated. Otherwise it is ignored.",
)
@click.argument("network_ident", metavar="NETWORK", shell_complete=complete_networks)
@click.argument("container", shell_complete=complete_containers)
@pass_session
def connect(session: Session, ip: str | None, ip6: str | None, network_ident: str, container: str) -> None:
    """Connect a container to a network.

    NETWORK and CONTAINER are network and container identifiers, respectively. Once connected,
    the container can communicate with other containers in the same network.
    """
    session.client.post("/networks/connect", body=endpoint_config(network_ident, container, ip, ip6), ok=(204,))


def endpoint_config(network_ident: str, container: str, ip: str | None, ip6: str | None) -> dict[str, str]:
    """The `EndPointConfig` body of `POST /networks/connect`; a missing address is allocated (`<auto>`)."""
    return {
        "container": container,
        "network": network_ident,
        "ip_address": AUTO if ip is None else ip,
        "ip_address6": AUTO if ip6 is None else ip6,
    }


@network.command(name="disconnect", no_args_is_help=True)
@click.argument("network_ident", metavar="NETWORK", shell_complete=complete_networks)
@click.argument("container", shell_complete=complete_containers)
@pass_session
def disconnect(session: Session, network_ident: str, container: str) -> None:
    """Disconnect a container from a network.

    Running containers can also be disconnected from a network.
    """
    session.client.post(api_path("/networks/{}/disconnect/{}", network_ident, container), ok=(204,))


@network.command(name="ls")
@listing_options("network ids")
@pass_session
def listing(session: Session, output: str, quiet: bool) -> None:
    """List networks"""
    networks = reply_list(session.client.get("/networks/list"))
    print_listing(session, networks, output=output, quiet=quiet, key="id", columns=COLUMNS, row=network_row)


def network_row(item: dict[str, Any]) -> list[str]:
    """One line of `network ls`."""
    return [str(item.get(key) or "") for key in ("id", "name", "type", "subnet")]


@network.command(name="rm", no_args_is_help=True)
@click.argument("networks", nargs=-1, required=True, shell_complete=complete_networks)
@pass_session
def remove(session: Session, networks: tuple[str, ...]) -> None:
    """Remove one or more networks. Any connected containers will be disconnected.

    Removal stops at the first network that cannot be removed.
    """
    for ident in networks:
        session.out.line(reply_id(session.client.delete(api_path("/networks/{}", ident))))


network.add_command(
    inspect_command(
        "inspect", "network", "/networks/{}/inspect", "Display detailed information on a network.", complete_networks
    )
)
network.add_command(
    prune_command(
        "prune",
        "/networks/prune",
        "Remove all unused networks, i.e., networks without connected containers.",
        "WARNING! This will remove all unused networks.",
    )
)
