"""The nftables table generator (kleened.platform.linux.nftables.render): a pure function of
networks and published ports. Rules are checked as text; where `nft` and root are available
the rendered tables are also type-checked by `nft -c` (nothing is loaded)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

import pytest

from kleene_protocol.models import Network, PublishedPort
from kleened.platform.linux import nftables


def net(name: str = "n", **kw) -> Network:
    base = dict(
        id=f"{name}0000000000"[:12],
        name=name,
        type="bridge",
        interface="kt0",
        subnet="10.13.37.0/24",
        subnet6="",
        gateway="",
        gateway6="",
        nat="eth0",
        icc=True,
        internal=False,
    )
    return Network(**{**base, **kw})


def port(
    host: str = "8080",
    cont: str = "80",
    proto: str = "tcp",
    ip4: str = "10.13.37.2",
    ip6: str = "",
    interfaces: tuple[str, ...] = ("eth0",),
) -> PublishedPort:
    return PublishedPort(
        interfaces=list(interfaces),
        host_port=host,
        container_port=cont,
        protocol=proto,
        ip_address=ip4,
        ip_address6=ip6,
    )


def chains(text: str) -> dict[str, list[str]]:
    """chain name -> its rules (without the `type ... hook` line)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("chain "):
            current = stripped.split()[1]
            out[current] = []
        elif current and stripped and stripped != "}" and not stripped.startswith("type "):
            out[current].append(stripped)
    return out


def can_check() -> bool:
    return os.geteuid() == 0 and shutil.which("nft") is not None


def nft_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=nftables.transaction("ktunit", text),
        text=True,
        capture_output=True,
        check=False,
    )


def test_empty_table():
    text = nftables.render("kt1", [], [])
    assert text.startswith("table inet kt1 {\n") and text.endswith("}\n")
    rules = chains(text)
    assert set(rules) == {"prerouting", "output", "postrouting", "forward", "input"}
    assert rules["forward"] == ["ct state established,related accept"]
    assert rules["prerouting"] == rules["output"] == rules["postrouting"] == []
    assert rules["input"] == ['iifname != "lo" ip daddr 127.0.0.0/8 ct state != { established, related } counter drop']


def test_nat_icc_and_isolation():
    rules = chains(nftables.render("kt1", [net(), net("b", subnet="10.14.0.0/16", nat="", icc=False)], []))
    assert rules["postrouting"] == [
        "ip saddr 127.0.0.0/8 ip daddr { 10.13.37.0/24, 10.14.0.0/16 } ct status dnat masquerade",
        'ip saddr 10.13.37.0/24 oifname "eth0" masquerade',
    ]
    assert rules["forward"] == [
        "ct state established,related accept",
        "ip saddr 10.13.37.0/24 ip daddr 10.13.37.0/24 accept",
        "ip saddr 10.14.0.0/16 ip daddr 10.14.0.0/16 counter drop",
        "ip daddr 10.13.37.0/24 counter drop",
        "ip daddr 10.14.0.0/16 counter drop",
    ]


def test_internal_blocks_egress_and_never_nats():
    rules = chains(nftables.render("kt1", [net(internal=True, subnet6="fd00::/64")], []))
    assert "ip saddr 10.13.37.0/24 ip daddr != 10.13.37.0/24 counter drop" in rules["forward"]
    assert "ip6 saddr fd00::/64 ip6 daddr != fd00::/64 counter drop" in rules["forward"]
    assert not [r for r in rules["postrouting"] if "oifname" in r]


def test_ipv6_subnets_get_the_same_rules():
    rules = chains(nftables.render("kt1", [net(subnet="", subnet6="fd00:1::/64", icc=False)], []))
    assert rules["postrouting"] == ['ip6 saddr fd00:1::/64 oifname "eth0" masquerade']
    assert "ip6 saddr fd00:1::/64 ip6 daddr fd00:1::/64 counter drop" in rules["forward"]
    assert rules["forward"][-1] == "ip6 daddr fd00:1::/64 counter drop"


def test_single_published_port():
    rules = chains(nftables.render("kt1", [net()], [port(interfaces=("eth0", "em1"))]))
    assert rules["prerouting"] == [
        'iifname "eth0" meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.13.37.2:80',
        'iifname "em1" meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.13.37.2:80',
    ]
    assert rules["output"] == ["meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.13.37.2:80"]
    assert "ip daddr 10.13.37.2 tcp dport 80 accept" in rules["forward"]


def test_rule_order_internal_then_ports_then_icc_then_isolation():
    """Published ports open across networks (even icc=false ones) but not to internal ones."""
    text = nftables.render("kt1", [net(icc=False), net("i", subnet="10.9.0.0/24", internal=True)], [port()])
    fwd = chains(text)["forward"]
    internal = fwd.index("ip saddr 10.9.0.0/24 ip daddr != 10.9.0.0/24 counter drop")
    published = fwd.index("ip daddr 10.13.37.2 tcp dport 80 accept")
    icc = fwd.index("ip saddr 10.13.37.0/24 ip daddr 10.13.37.0/24 counter drop")
    isolation = fwd.index("ip daddr 10.13.37.0/24 counter drop")
    assert internal < published < icc < isolation


def test_udp_and_ipv6_ports():
    rules = chains(
        nftables.render("kt1", [net(subnet6="fd00::/64")], [port(proto="udp", ip6="fd00::2", interfaces=("eth0",))])
    )
    assert (
        'iifname "eth0" meta nfproto ipv6 fib daddr type local udp dport 8080 dnat ip6 to [fd00::2]:80'
        in rules["prerouting"]
    )
    assert (
        "meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local udp dport 8080 dnat ip6 to [fd00::2]:80"
        in rules["output"]
    )
    assert "ip6 daddr fd00::2 udp dport 80 accept" in rules["forward"]
    assert "ip daddr 10.13.37.2 udp dport 80 accept" in rules["forward"]


def test_port_ranges():
    shifted = chains(nftables.render("kt1", [], [port("5000:5002", "4000:*")]))
    assert shifted["prerouting"][0].endswith(
        "tcp dport 5000-5002 dnat ip to tcp dport map "
        "{ 5000 : 10.13.37.2 . 4000, 5001 : 10.13.37.2 . 4001, 5002 : 10.13.37.2 . 4002 }"
    )
    assert "ip daddr 10.13.37.2 tcp dport 4000-4002 accept" in shifted["forward"]
    same = chains(nftables.render("kt1", [], [port("7000:7005", "7000:*")]))
    assert same["output"] == ["meta nfproto ipv4 fib daddr type local tcp dport 7000-7005 dnat ip to 10.13.37.2"]
    many_to_one = chains(nftables.render("kt1", [], [port("7100:7105", "80")]))
    assert many_to_one["output"][0].endswith("tcp dport 7100-7105 dnat ip to 10.13.37.2:80")
    assert "ip daddr 10.13.37.2 tcp dport 80 accept" in many_to_one["forward"]


def test_ports_without_addresses_or_interfaces():
    rules = chains(nftables.render("kt1", [], [port(ip4=""), port("9090", "90", interfaces=())]))
    assert rules["prerouting"] == []
    assert rules["output"] == ["meta nfproto ipv4 fib daddr type local tcp dport 9090 dnat ip to 10.13.37.2:90"]


def test_rendering_is_deterministic():
    networks = [net(), net("b", subnet="10.14.0.0/16", subnet6="fd00::/64", internal=True)]
    ports = [port(), port("5000:5001", "4000:*", ip6="fd00::3")]
    assert nftables.render("kt1", networks, ports) == nftables.render("kt1", networks, ports)


def test_transaction_replaces_only_our_table():
    text = nftables.transaction("kt1", "table inet kt1 {\n}\n")
    assert text.splitlines()[:2] == ["table inet kt1 {}", "delete table inet kt1"]
    assert nftables.transaction("kt1", "").splitlines() == ["table inet kt1 {}", "delete table inet kt1"]


@pytest.mark.skipif(not can_check(), reason="needs root and nft")
@pytest.mark.parametrize(
    ("icc", "internal", "nat"), list(itertools.product([True, False], [True, False], ["eth0", ""]))
)
def test_nft_accepts_every_flag_combination(icc, internal, nat):
    networks = [net(icc=icc, internal=internal, nat=nat, subnet6="fd00::/64")]
    ports = [port(), port("5000:5003", "4000:*", proto="udp", ip6="fd00::2"), port("6000:6001", "6000:*")]
    result = nft_check(nftables.render("ktunit", networks, ports))
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not can_check(), reason="needs root and nft")
def test_nft_accepts_empty_and_rejects_corrupt():
    assert nft_check(nftables.render("ktunit", [], [])).returncode == 0
    corrupt = nftables.render("ktunit", [net()], [port()]).replace("dnat ip to", "dnat ip too")
    result = nft_check(corrupt)
    assert result.returncode != 0 and "syntax error" in result.stderr
