"""Pure network logic (kleened.core.ipam): validation messages, upstream's allocation rule,
published-port specs, default routes per driver and `/etc/hosts` text. No root needed."""

from __future__ import annotations

import time

import pytest

from kleene_protocol.models import NetworkConfig, PublishedPort
from kleened.core import ipam
from kleened.core.errors import Conflict, InvalidArgument
from kleened.core.ipam import EndpointRecord, NetworkRecord


def config(**kw) -> NetworkConfig:
    return NetworkConfig(**{"name": "n", "type": "bridge", **kw})


def network(**kw) -> NetworkRecord:
    base = dict(
        id="aaaaaaaaaaaa",
        name="n",
        type="bridge",
        interface="kleene0",
        subnet="",
        subnet6="",
        gateway="",
        gateway6="",
        nat="",
        icc=True,
        internal=False,
        created="t",
        owned=True,
    )
    return NetworkRecord(**{**base, **kw})


def endpoint(container: str, net: str = "net", ip4: str = "", ip6: str = "") -> EndpointRecord:
    return EndpointRecord(
        id="e" + container, network_id=net, container_id=container, ip_address=ip4, ip_address6=ip6, created="t"
    )


def message(exc_info: pytest.ExceptionInfo) -> str:
    return exc_info.value.message


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    ({"subnet": "172.18.0.0-16"}, 'invalid subnet: could not parse cidr block: "172.18.0.0-16"'),
    ({"subnet": "fdef::/64"}, "invalid subnet: wrong IP protocol"),
    ({"subnet6": "10.0.0.0/24"}, "invalid subnet6: wrong IP protocol"),
    ({"gateway": "fdef::1"}, "invalid gateway: wrong IP protocol"),
    ({"gateway6": "10.0.0.1"}, "invalid gateway6: wrong IP protocol"),
    ({"gateway": "nonsense"}, 'invalid gateway: could not parse cidr block: "nonsense"'),
    ({"type": "custom"}, "a custom network needs the name of an existing interface"),
    ({"interface": "bad name"}, "invalid interface name 'bad name': use up to 15 letters, digits, '_', '.' and '-'"),
])  # fmt: skip
def test_validation_messages(fields, expected):
    with pytest.raises(Conflict) as exc:
        ipam.validate_config(config(**fields))
    assert message(exc) == expected


def test_validation_order_is_upstreams():
    """subnet, subnet6, gateway, gateway6: the first failing field is reported."""
    with pytest.raises(Conflict) as exc:
        ipam.validate_config(config(subnet="x", subnet6="y", gateway="fd::1"))
    assert message(exc).startswith("invalid subnet:")
    with pytest.raises(Conflict) as exc:
        ipam.validate_config(config(subnet6="10.0.0.0/8", gateway="fd::1"))
    assert message(exc) == "invalid subnet6: wrong IP protocol"


def test_valid_configs_pass():
    ipam.validate_config(config(subnet="10.0.0.0/24", subnet6="fd00::/64", gateway="<auto>", gateway6="<auto>"))
    ipam.validate_config(config(subnet="10.0.0.5/24", gateway="10.0.0.1", gateway6="fd00::1", nat="eth0"))
    ipam.validate_config(config(type="custom", interface="lo"))


def test_overlapping_subnets():
    others = [network(name="a", subnet="10.0.0.0/16"), network(name="b", subnet6="fd00::/48")]
    assert ipam.overlapping("10.0.3.0/24", others).name == "a"
    assert ipam.overlapping("fd00:0:0:1::/64", others).name == "b"
    assert ipam.overlapping("10.1.0.0/24", others) is None
    assert ipam.overlapping("", others) is None


def test_names_and_cidrs():
    assert ipam.first_host("172.19.1.0/24") == "172.19.1.1"
    assert ipam.first_host("fdef:1234:5678::/48") == "fdef:1234:5678::1"
    assert ipam.cidr("172.19.1.2", "172.19.1.0/24") == "172.19.1.2/24"
    assert ipam.interface_name("kleene", set()) == "kleene0"
    assert ipam.interface_name("kleene", {"kleene0", "kleene1", "kleene3"}) == "kleene2"


def test_bridge_routes_cover_what_addresses_do_not():
    assert ipam.bridge_routes(network(type="loopback", subnet="10.0.0.5/24", subnet6="fd00::/64")) == [
        "10.0.0.0/24", "fd00::/64"]
    auto = network(subnet="10.0.0.0/24", subnet6="fd00::/64", addresses=["10.0.0.1/24", "fd00::1/64"])
    assert ipam.bridge_routes(auto) == []
    assert ipam.bridge_routes(network(subnet="10.0.0.0/24", addresses=["fd00::1/64"])) == ["10.0.0.0/24"]


def test_record_to_api_keeps_every_field():
    api = network(gateway="<auto>", nat="eth0").to_api()
    assert (api.interface, api.gateway, api.nat, api.icc) == ("kleene0", "<auto>", "eth0", True)
    assert endpoint("c", ip4="10.0.0.2").to_api("ktv1").epair == "ktv1"
    assert endpoint("c").to_api().epair is None


# --- allocation ---------------------------------------------------------------------------------


def test_allocation_includes_the_broadcast_address():
    """Upstream: candidates run from network+1 to the last address, so a /30 holds three."""
    used: list[str] = []
    for expected in ("172.19.0.1", "172.19.0.2", "172.19.0.3"):
        assert ipam.allocate("172.19.0.0/30", used) == expected
        used.append(expected)
    assert ipam.allocate("172.19.0.0/30", used) is None


def test_allocation_skips_used_and_reuses_freed():
    assert ipam.allocate("10.0.0.0/24", ["10.0.0.1/24", "10.0.0.2"]) == "10.0.0.3"
    assert ipam.allocate("10.0.0.0/24", ["10.0.0.2", "<auto>", ""]) == "10.0.0.1"
    assert ipam.allocate("fdef:1234:5678::/48", ["fdef:1234:5678::1/48"]) == "fdef:1234:5678::2"


def test_allocation_in_a_huge_block_is_fast():
    used = [f"fd00::{i:x}" for i in range(1, 2001)]
    start = time.monotonic()
    assert ipam.allocate("fd00::/8", used) == "fd00::7d1"
    assert time.monotonic() - start < 0.5


def test_choose_address_rules():
    v4 = dict(version=4)
    assert ipam.choose_address("", "10.0.0.0/24", [], **v4) == ""
    assert ipam.choose_address("<auto>", "", [], **v4) == ""  # no subnet: nothing, no error
    assert ipam.choose_address("<auto>", "10.0.0.0/24", ["10.0.0.1"], **v4) == "10.0.0.2"
    assert ipam.choose_address("10.0.0.9", "10.0.0.0/24", ["10.0.0.1"], **v4) == "10.0.0.9"
    assert ipam.choose_address("<auto>", "fd00::/64", [], version=6) == "fd00::1"


@pytest.mark.parametrize(("requested", "subnet", "used", "version", "expected"), [
    ("10.56.78.2", "", [], 4, "cannot set ip address because there is no IPv4 subnet defined for this network"),
    ("fd00::2", "", [], 6, "cannot set ip address because there is no IPv6 subnet defined for this network"),
    ("<auto>", "172.19.0.0/30", ["172.19.0.1", "172.19.0.2", "172.19.0.3"], 4,
     "no more inet IP's left in the network"),
    ("<auto>", "fd00::/127", ["fd00::1"], 6, "no more inet6 IP's left in the network"),
    ("10.0.0.300", "10.0.0.0/24", [], 4, "could not parse inet address 10.0.0.300: einval"),
    ("fd00::1", "10.0.0.0/24", [], 4, "could not parse inet address fd00::1: einval"),
    ("10.0.1.5", "10.0.0.0/24", [], 4, "ip address 10.0.1.5 is not in the network's subnet 10.0.0.0/24"),
    ("10.0.0.5", "10.0.0.0/24", ["10.0.0.5"], 4, "ip address 10.0.0.5 is already in use in the network"),
])  # fmt: skip
def test_choose_address_errors(requested, subnet, used, version, expected):
    with pytest.raises(Conflict) as exc:
        ipam.choose_address(requested, subnet, used, version=version)
    assert message(exc) == expected


# --- published ports ----------------------------------------------------------------------------


def test_port_specs():
    assert ipam.parse_ports("8080", "80") == ipam.PortSpec(8080, 8080, 80, 80)
    assert ipam.parse_ports("5000:6000", "4000:*") == ipam.PortSpec(5000, 6000, 4000, 5000)
    assert ipam.parse_ports("8080", "80:*") == ipam.PortSpec(8080, 8080, 80, 80)
    assert ipam.parse_ports("8080:8090", "80") == ipam.PortSpec(8080, 8090, 80, 80)
    assert ipam.parse_ports("8080:8090", "80:90") == ipam.PortSpec(8080, 8090, 80, 90)


@pytest.mark.parametrize(("host", "container", "expected"), [
    ("3leet", "80", "invalid port value (should be in the range 0 - 65535)"),
    ("70000", "80", "invalid port value (should be in the range 0 - 65535)"),
    ("80", "", "invalid port value (should be in the range 0 - 65535)"),
    ("80:*", "80", "invalid port value (should be in the range 0 - 65535)"),
    ("1:2:3", "80", "could not decode port publishing specification"),
    ("80", "1:2:3", "could not decode port publishing specification"),
    ("90:80", "80", "invalid port range in port publishing specification"),
    ("8080:8090", "80:85", "the host and container port ranges of a published port must have the same size"),
    ("65535:65535", "65535:*", None),
    ("60000:65535", "65000:*", "invalid port range in port publishing specification"),
])  # fmt: skip
def test_port_spec_errors(host, container, expected):
    if expected is None:
        ipam.parse_ports(host, container)
        return
    with pytest.raises(InvalidArgument) as exc:
        ipam.parse_ports(host, container)
    assert message(exc) == expected


def test_check_ports():
    port = PublishedPort(interfaces=[], host_port="8080", container_port="80", protocol="tcp")
    for driver in ("host", "disabled"):
        with pytest.raises(InvalidArgument) as exc:
            ipam.check_ports(driver, [port], "eth0")
        assert message(exc) == f"cannot publish ports of a container using the '{driver}' network driver"
    assert ipam.check_ports("host", [], "eth0") == []
    assert ipam.check_ports("ipnet", [port], "eth0")[0].interfaces == ["eth0"]
    assert ipam.check_ports("ipnet", [port], "")[0].interfaces == []
    chosen = PublishedPort(interfaces=["em1"], host_port="8080", container_port="80", protocol="udp")
    assert ipam.check_ports("vnet", [chosen], "eth0") == [chosen]


def test_first_addresses_follow_connection_order():
    endpoints = [
        endpoint("c", "n1", ip6="fd00::2"),
        endpoint("c", "n2", ip4="10.0.0.2"),
        endpoint("c", "n3", ip4="10.1.0.2", ip6="fd01::2"),
    ]
    assert ipam.first_addresses(endpoints) == ("10.0.0.2", "fd00::2")
    assert ipam.first_addresses([]) == ("", "")
    port = PublishedPort(interfaces=["eth0"], host_port="1", container_port="1", protocol="tcp")
    assert ipam.with_addresses([port], "10.0.0.2", "")[0].ip_address == "10.0.0.2"


# --- default routes -----------------------------------------------------------------------------


def test_vnet_routes_through_the_networks_gateways():
    net = network(
        subnet="172.19.1.0/24", subnet6="fdef:1234:5678::/48", gateway="172.19.1.99", gateway6="fdef:1234:5678:9999::"
    )
    ep = endpoint("c", ip4="172.19.1.2", ip6="fdef:1234:5678::2")
    assert ipam.default_routes("vnet", net, ep, [], bridged=True) == ("172.19.1.99", "fdef:1234:5678:9999::")
    assert ipam.default_routes(
        "vnet", network(subnet="10.0.0.0/24"), endpoint("c", ip4="10.0.0.2"), [], bridged=True
    ) == (None, None)


def test_ipnet_routes_through_the_host():
    bridge = network(
        subnet="172.19.1.0/24",
        subnet6="fd00::/64",
        gateway="172.19.1.1",
        gateway6="fd00::1",
        addresses=["172.19.1.1/24", "fd00::1/64"],
    )
    ep = endpoint("c", ip4="172.19.1.2", ip6="fd00::2")
    assert ipam.default_routes("ipnet", bridge, ep, bridge.addresses, bridged=True) == ("172.19.1.1", "fd00::1")
    loopback = network(type="loopback", subnet="172.19.1.0/24", subnet6="fd00::/64")
    assert ipam.default_routes("ipnet", loopback, ep, [], bridged=True) == ("", "fe80::1")
    custom_bridge = network(type="custom", owned=False, subnet="172.19.1.0/24", subnet6="fd00::/64")
    assert ipam.default_routes("ipnet", custom_bridge, ep, [], bridged=True) == ("", None)
    routed = network(type="custom", owned=False, subnet="172.19.1.0/24", subnet6="fd00::/64")
    assert ipam.default_routes("ipnet", routed, ep, ["192.0.2.2/24"], bridged=False) == ("", "fe80::1")
    assert ipam.default_routes("ipnet", loopback, endpoint("c"), [], bridged=True) == (None, None)


# --- /etc/hosts ---------------------------------------------------------------------------------


def test_hosts_lists_peers_on_shared_networks_only():
    endpoints = [
        endpoint("a", "n1", ip4="10.0.0.1", ip6="fd00::1"),
        endpoint("b", "n1", ip4="10.0.0.2"),
        endpoint("c", "n2", ip4="10.1.0.1"),
        endpoint("a", "n2", ip4="10.1.0.2"),
    ]
    names = {"a": ("web", "a"), "b": ("db", "b"), "c": ("c",)}
    lines = ipam.hosts_for("a", names, endpoints).splitlines()
    assert lines[1:3] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert lines[3:] == ["10.0.0.1\tweb a", "fd00::1\tweb a", "10.1.0.2\tweb a", "10.0.0.2\tdb b", "10.1.0.1\tc"]
    assert "10.1.0.1\tc" not in ipam.hosts_for("b", names, endpoints)
    assert ipam.hosts_for("d", {"d": ("lonely", "d")}, endpoints).splitlines()[-1] == "127.0.1.1\tlonely d"
