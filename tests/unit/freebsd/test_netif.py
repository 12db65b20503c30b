"""Interface command lines and ifconfig parsing (platform/freebsd/netif.py)."""

from __future__ import annotations

import pytest

from kleened.platform.freebsd import netif

IFCONFIG = """\
em0: flags=8863<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500
\toptions=481009b<RXCSUM,TXCSUM,VLAN_MTU>
\tether 58:9c:fc:10:ff:c1
\tinet 192.0.2.10 netmask 0xffffff00 broadcast 192.0.2.255
\tinet6 fe80::5a9c:fcff:fe10:ffc1%em0 prefixlen 64 scopeid 0x1
\tmedia: Ethernet autoselect (1000baseT <full-duplex>)
\tstatus: active
lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> metric 0 mtu 16384
\tinet 127.0.0.1 netmask 0xff000000
\tinet6 ::1 prefixlen 128
\tgroups: lo
kleene0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500
\tether 58:9c:fc:10:00:01
\tinet 10.13.37.1 netmask 0xffffff00 broadcast 10.13.37.255
\tinet6 fdef:1234:5678::1 prefixlen 48
\tid 00:00:00:00:00:00 priority 32768 hellotime 2 fwddelay 15
\tmember: epair0a flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
\t        ifmaxaddr 0 port 5 priority 128 path cost 2000
\tgroups: bridge kleened
epair0a: flags=8863<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500
\tdescription: kleened:a1b2c3d4e5f6
\tgroups: epair kleened
"""


def test_parse_ifconfig():
    found = netif.parse_ifconfig(IFCONFIG)
    assert list(found) == ["em0", "lo0", "kleene0", "epair0a"]
    assert found["em0"].cidrs == ["192.0.2.10/24"] and found["em0"].kind == "device" and found["em0"].up
    assert found["lo0"].cidrs == ["127.0.0.1/8", "::1/128"] and found["lo0"].kind == "loopback"
    bridge = found["kleene0"]
    assert bridge.cidrs == ["10.13.37.1/24", "fdef:1234:5678::1/48"]
    assert bridge.members == ["epair0a"] and bridge.kind == "bridge" and "kleened" in bridge.groups
    assert found["epair0a"].description == "kleened:a1b2c3d4e5f6" and found["epair0a"].kind == "epair"


def test_ownership_group():
    """B6: kleened's interfaces are tagged; the default prefix gives `ifconfig -g kleened`."""
    assert netif.owner_group("kleene") == "kleened"
    assert netif.owner_group("kt1a2b3") == "kt1a2b3d"  # never ends in a digit (ifconfig refuses that)
    assert netif.group_argv("kleened") == ["ifconfig", "-g", "kleened"]


def test_create_then_tag_then_rename():
    assert netif.create_argv("bridge") == ["ifconfig", "bridge", "create"]
    assert netif.adopt_argv("bridge3", group="kleened", name="kleene0") == [
        "ifconfig", "bridge3", "group", "kleened", "name", "kleene0"]
    assert netif.adopt_argv("epair4a", group="kleened", description="kleened:c1") == [
        "ifconfig", "epair4a", "group", "kleened", "description", "kleened:c1"]


def test_address_lines():
    assert netif.alias_argv("kleene0", "10.13.37.1/24") == ["ifconfig", "kleene0", "inet", "10.13.37.1/24", "alias"]
    assert netif.alias_argv("kleene0", "fd00::1/64") == ["ifconfig", "kleene0", "inet6", "fd00::1/64", "alias"]
    assert netif.host_cidr("10.13.37.2") == "10.13.37.2/32"  # ipnet aliases, as upstream
    assert netif.host_cidr("fd00::2") == "fd00::2/128"
    assert netif.unalias_argv("kleene0", "10.13.37.2/32") == ["ifconfig", "kleene0", "inet", "10.13.37.2", "-alias"]
    assert netif.unalias_argv("kleene0", "fd00::2") == ["ifconfig", "kleene0", "inet6", "fd00::2", "-alias"]


def test_epair_lines():
    assert netif.epair_ends("epair12a") == ("epair12a", "epair12b")
    with pytest.raises(ValueError):
        netif.epair_ends("bridge0")
    assert netif.addm_argv("kleene0", "epair12a") == ["ifconfig", "kleene0", "addm", "epair12a"]
    assert netif.vnet_argv("epair12b", "c1") == ["ifconfig", "epair12b", "vnet", "c1"]
    assert netif.reclaim_argv("epair12b", "c1") == ["ifconfig", "epair12b", "-vnet", "c1"]
    assert netif.deletem_argv("kleene0", "epair12a") == ["ifconfig", "kleene0", "deletem", "epair12a"]


def test_jail_side_addresses_come_before_routes():
    """route(8) refuses a gateway no address reaches; upstream ordered them the same way."""
    lines = netif.jail_lines("epair0b", ["10.13.37.3/24", "fdef::3/48"], "10.13.37.1", "fdef::1")
    assert lines == [
        ["/sbin/ifconfig", "epair0b", "inet", "10.13.37.3/24", "alias"],
        ["/sbin/ifconfig", "epair0b", "inet6", "-ifdisabled"],
        ["/sbin/ifconfig", "epair0b", "inet6", "fdef::3/48", "alias"],
        ["/sbin/ifconfig", "epair0b", "up"],
        ["/sbin/route", "add", "-inet", "default", "10.13.37.1"],
        ["/sbin/route", "add", "-inet6", "default", "fdef::1"],
    ]
    assert netif.jail_lines("epair1b", ["10.0.0.2/24"], None, None) == [
        ["/sbin/ifconfig", "epair1b", "inet", "10.0.0.2/24", "alias"], ["/sbin/ifconfig", "epair1b", "up"]]


def test_vnet_loopback_is_configured():
    """B19: a vnet jail's lo0 starts down, without 127.0.0.1."""
    assert netif.LOOPBACK_LINE == ["/sbin/ifconfig", "lo0", "inet", "127.0.0.1/8", "up"]


def test_default_route_interface():
    text = ("   route to: default\ndestination: default\n       mask: default\n    gateway: 192.0.2.1\n"
            "        fib: 0\n  interface: em0\n      flags: <UP,GATEWAY,DONE,STATIC>\n")
    assert netif.parse_route_interface(text) == "em0"
    assert netif.parse_route_interface("") == ""


def test_sysctls():
    assert netif.sysctl_set_argv(netif.FORWARDING6, "1") == ["sysctl", "net.inet6.ip6.forwarding=1"]  # B23
    assert netif.sysctl_set_argv(netif.PFIL_BRIDGE, "1") == ["sysctl", "net.link.bridge.pfil_bridge=1"]
