"""Upstream klee's network commands against our daemon, with upstream's outputs and messages:
create, ls, inspect, connect, disconnect, rm, prune, and `run -n NET --ip IP`.

Upstream prints kleened's error messages on stdout (and exits 0 for most of them); these tests
check the text it prints, which is what its users see.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.rootfs import file_url, session_tarball


@pytest.fixture(scope="module")
def busybox(daemon) -> str:
    from tests.compat.conftest import run_upstream

    tag = f"nbox{secrets.token_hex(3)}"
    r = run_upstream(daemon.host, "image", "create", "-t", tag, "fetch", file_url(session_tarball(daemon.workdir)))
    assert r.returncode == 0 and "image created" in r.stdout, r
    return tag


def fresh_subnet() -> tuple[str, str]:
    """A /24 unlikely to collide with other tests' networks, and its first three octets."""
    prefix = f"10.{secrets.randbelow(200) + 30}.{secrets.randbelow(250) + 1}"
    return f"{prefix}.0/24", prefix


def test_create_ls_inspect_rm(klee):
    name = f"un{secrets.token_hex(3)}"
    subnet, _ = fresh_subnet()
    r = klee("network", "create", "--subnet", subnet, name)
    assert r.returncode == 0 and len(r.lines) == 1, r
    network_id = r.lines[0]
    assert klee("network", "create", "--subnet", fresh_subnet()[0], name).lines == ["network name is already taken"]
    ls = klee("network", "ls")
    assert ls.lines[0].split() == ["ID", "NAME", "TYPE", "SUBNET"]
    assert [network_id, name, "loopback", subnet] in [line.split() for line in ls.lines]
    assert [line.split() for line in klee("lsn").lines] == [line.split() for line in ls.lines]
    inspect = json.loads(klee("network", "inspect", name).stdout)
    assert inspect["network"]["id"] == network_id and inspect["network"]["subnet"] == subnet
    assert inspect["network"]["type"] == "loopback" and inspect["network_endpoints"] == []
    assert json.loads(klee("isn", network_id[:6]).stdout)["network"]["name"] == name
    assert klee("network", "rm", name).lines == [network_id]
    assert klee("rmn", name).lines == ["network not found."]
    assert klee("network", "inspect", name).lines == ["network not found"]


def test_create_validation_messages(klee):
    name = f"uv{secrets.token_hex(3)}"
    r = klee("network", "create", "--subnet", "10.1.2.300/24", name)
    assert r.lines[0].startswith("invalid subnet"), r
    r = klee("network", "create", "--subnet", "fd00::/64", name)
    assert r.lines == ["invalid subnet: wrong IP protocol"], r
    assert name not in klee("network", "ls").stdout


def test_bridge_with_options(klee):
    name = f"ub{secrets.token_hex(3)}"
    subnet, prefix = fresh_subnet()
    r = klee("network", "create", "-t", "bridge", "--subnet", subnet, "--nat", "false", "--icc", "false",
             "--internal", name)  # fmt: skip
    assert r.returncode == 0 and len(r.lines) == 1, r
    network = json.loads(klee("isn", name).stdout)["network"]
    assert (network["type"], network["gateway"], network["nat"]) == ("bridge", f"{prefix}.1", "")
    assert (network["icc"], network["internal"]) == (False, True)
    assert klee("rmn", name).lines == [r.lines[0]]


def test_connect_disconnect_and_run_with_an_ip(klee, busybox):
    net = f"uc{secrets.token_hex(3)}"
    subnet, prefix = fresh_subnet()
    network_id = klee("network", "create", "--subnet", subnet, net).lines[0]
    name = f"ucc{secrets.token_hex(3)}"
    assert klee("create", "--name", name, busybox, "/bin/sleep", "60").returncode == 0
    try:
        # A container created without -n has the host driver: upstream's message.
        assert klee("network", "connect", net, name).lines == [
            "containers with the 'host' network-driver cannot connect to networks."
        ]
        ipnet = f"uci{secrets.token_hex(3)}"
        ipnet_id = klee("create", "--name", ipnet, "-l", "ipnet", busybox, "/bin/sleep", "60").lines[0]
        r = klee("network", "connect", "--ip", f"{prefix}.20", net, ipnet)
        assert (r.returncode, r.stdout) == (0, ""), r
        assert klee("network", "connect", net, ipnet).lines == ["container already connected to the network"]
        endpoints = json.loads(klee("isn", net).stdout)["network_endpoints"]
        assert [(e["container_id"], e["ip_address"]) for e in endpoints] == [(ipnet_id, f"{prefix}.20")]
        r = klee("network", "disconnect", net, ipnet)
        assert (r.returncode, r.stdout) == (0, ""), r
        assert json.loads(klee("isn", net).stdout)["network_endpoints"] == []
        assert klee("network", "disconnect", net, "nosuchcontainer").lines == ["container not found"]
        assert klee("network", "disconnect", "nosuchnetwork", ipnet).lines == ["network not found"]

        # run -n NET --ip IP: the container has that address, and another one reaches it.
        r = klee("run", "-n", net, "--ip", f"{prefix}.7", busybox, "/bin/sh", "-c", "ip -4 -o addr show")
        assert r.returncode == 0 and r.lines[1].startswith("created execution instance "), r
        assert f"inet {prefix}.7/24" in r.stdout
        run_id = r.lines[0]
        inspect = json.loads(klee("isc", run_id).stdout)
        assert inspect["container"]["network_driver"] == "ipnet"
        assert [e["ip_address"] for e in inspect["container_endpoints"]] == [f"{prefix}.7"]
        r = klee("run", "-n", net, "--ip", f"{prefix}.7", busybox, "/bin/true")
        assert "could not connect container: " in r.stdout, r  # the address is taken
        assert klee("rmc", run_id).lines == [run_id]
        leftover = r.lines[0]
        klee("rmc", leftover)
        klee("rmc", ipnet)
    finally:
        klee("rmc", "-f", name)
    assert klee("rmn", net).lines == [network_id]


def test_prune_removes_only_unused_networks(klee, busybox):
    used, unused = f"up{secrets.token_hex(3)}", f"uq{secrets.token_hex(3)}"
    used_id = klee("network", "create", "--subnet", fresh_subnet()[0], used).lines[0]
    unused_id = klee("network", "create", "--subnet", fresh_subnet()[0], unused).lines[0]
    cid = klee("create", "-n", used, busybox, "/bin/true").lines[0]
    try:
        r = klee("network", "prune", "-f")
        assert unused_id in r.lines and used_id not in r.lines
        ls = klee("lsn").stdout
        assert used in ls and unused not in ls
    finally:
        klee("rmc", cid)
        klee("rmn", used)
