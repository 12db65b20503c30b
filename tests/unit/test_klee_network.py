"""`klee network ...` against a fake kleened: the requests upstream klee sends (kleened-api.md
Appendix A), outputs and errors."""

from __future__ import annotations

import json

import pytest

from klee.errors import KleeError
from tests.unit import test_klee_cli

# the fake kleened and the CliRunner of test_klee_cli
klee, kleened, no_config_files = test_klee_cli.klee, test_klee_cli.kleened, test_klee_cli.no_config_files

NETWORKS = [
    {"id": "a1b2c3d4e5f6", "name": "testnet", "type": "loopback", "interface": "kleene0", "subnet": "10.13.37.0/24",
     "subnet6": "", "gateway": "", "gateway6": "", "nat": "eth0", "icc": True, "internal": False},
    {"id": "0f9e8d7c6b5a", "name": "v6only", "type": "bridge", "interface": "kleene1", "subnet": "",
     "subnet6": "fd00::/64", "gateway": "", "gateway6": "<auto>", "nat": "", "icc": True, "internal": True},
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "body"),
    [
        (["testnet"], {"name": "testnet", "type": "loopback", "gateway": "", "gateway6": "", "icc": True,
                       "interface": "", "internal": False, "nat": "<host-gateway>", "subnet": "", "subnet6": ""}),
        (["-t", "bridge", "--subnet", "10.13.37.0/24", "--subnet6", "fd00::/64", "testnet2"],
         {"name": "testnet2", "type": "bridge", "gateway": "<auto>", "gateway6": "<auto>", "icc": True,
          "interface": "", "internal": False, "nat": "<host-gateway>", "subnet": "10.13.37.0/24",
          "subnet6": "fd00::/64"}),
        (["-t", "bridge", "--gw", "10.0.0.1", "--gw6", "", "--nat", "false", "--icc", "false", "--internal",
          "-i", "kleene9", "--subnet", "10.0.0.0/24", "n3"],
         {"name": "n3", "type": "bridge", "gateway": "10.0.0.1", "gateway6": "", "icc": False, "interface": "kleene9",
          "internal": True, "nat": "", "subnet": "10.0.0.0/24", "subnet6": ""}),
        (["--nat-if", "eth1", "--gw", "10.0.0.1", "--subnet", "10.0.0.0/24", "n4"],  # gateways only for bridges
         {"name": "n4", "type": "loopback", "gateway": "", "gateway6": "", "icc": True, "interface": "",
          "internal": False, "nat": "eth1", "subnet": "10.0.0.0/24", "subnet6": ""}),
        (["--no-nat", "--no-icc", "-t", "custom", "-i", "br0", "n5"],  # the spellings upstream's help promises
         {"name": "n5", "type": "custom", "gateway": "", "gateway6": "", "icc": False, "interface": "br0",
          "internal": False, "nat": "", "subnet": "", "subnet6": ""}),
    ],
)  # fmt: skip
def test_create_sends_upstreams_body(klee, kleened, args, body):
    kleened.on("POST", "/networks/create", 201, {"id": "a1b2c3d4e5f6"})
    result = klee("network", "create", *args)
    assert result.exit_code == 0, result.output
    assert result.output == "a1b2c3d4e5f6\n"
    assert kleened.requests == [("POST", "/networks/create", body)]


def test_create_bodies_match_the_protocol_struct(klee, kleened):
    import msgspec

    from kleene_protocol.models import EndPointConfig, NetworkConfig

    kleened.on("POST", "/networks/create", 201, {"id": "x"}).on("POST", "/networks/connect", 204)
    klee("network", "create", "-t", "bridge", "--subnet", "10.0.0.0/24", "--nat", "false", "n")
    klee("network", "connect", "--ip6", "fd00::5", "n", "c")
    (_, _, create), (_, _, connect) = kleened.requests
    assert set(create) == set(NetworkConfig.__struct_fields__)
    msgspec.convert(create, NetworkConfig)
    assert set(connect) == set(EndPointConfig.__struct_fields__)
    msgspec.convert(connect, EndPointConfig)


def test_create_errors(klee, kleened):
    kleened.on("POST", "/networks/create", 409, {"message": "network name is already taken"})
    result = klee("network", "create", "--subnet", "10.13.37.0/24", "testnet")
    assert isinstance(result.exception, KleeError) and result.exception.message == "network name is already taken"
    result = klee("network", "create", "-t", "overlay", "x")
    assert result.exception.message == "Error! 'overlay' is not a valid network type ('loopback', 'bridge', 'custom')"
    result = klee("network", "create", "--nat", "maybe", "x")
    assert result.exit_code != 0 and "'maybe' is not a valid boolean" in result.output
    assert len(kleened.requests) == 1


def test_connect_and_disconnect(klee, kleened):
    kleened.on("POST", "/networks/connect", 204).on("POST", "/networks/testnet/disconnect/abc", 204)
    assert klee("network", "connect", "testnet", "abc").output == ""
    assert klee("network", "connect", "--ip", "10.13.37.9", "testnet", "abc").exit_code == 0
    assert klee("network", "disconnect", "testnet", "abc").output == ""
    assert kleened.requests == [
        ("POST", "/networks/connect",
         {"container": "abc", "network": "testnet", "ip_address": "<auto>", "ip_address6": "<auto>"}),
        ("POST", "/networks/connect",
         {"container": "abc", "network": "testnet", "ip_address": "10.13.37.9", "ip_address6": "<auto>"}),
        ("POST", "/networks/testnet/disconnect/abc", None),
    ]  # fmt: skip


def test_connect_errors_are_one_line(klee, kleened):
    kleened.on("POST", "/networks/connect", 409, {"message": "container already connected to the network"})
    kleened.on("POST", "/networks/n/disconnect/c", 404, {"message": "container not found"})
    assert klee("network", "connect", "n", "c").exception.message == "container already connected to the network"
    assert klee("network", "disconnect", "n", "c").exception.message == "container not found"


def test_ls_table_quiet_and_json(klee, kleened):
    kleened.on("GET", "/networks/list", 200, NETWORKS)
    result = klee("lsn")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "ID             NAME      TYPE       SUBNET",
        "a1b2c3d4e5f6   testnet   loopback   10.13.37.0/24",
        "0f9e8d7c6b5a   v6only    bridge",
    ]
    assert klee("network", "ls", "-q").output == "a1b2c3d4e5f6\n0f9e8d7c6b5a\n"
    assert json.loads(klee("network", "ls", "--output", "json").output) == NETWORKS
    assert json.loads(klee("network", "ls", "--format", "json").output) == NETWORKS


def test_inspect_rm_and_prune(klee, kleened):
    inspect = {"network": NETWORKS[0], "network_endpoints": []}
    kleened.on("GET", "/networks/testnet/inspect", 200, inspect)
    kleened.on("DELETE", "/networks/testnet", 200, {"id": "a1b2c3d4e5f6"})
    kleened.on("DELETE", "/networks/gone", 404, {"message": "network not found."})
    kleened.on("POST", "/networks/prune", 200, ["0f9e8d7c6b5a"])
    assert json.loads(klee("isn", "testnet").output) == inspect
    result = klee("rmn", "testnet", "gone", "never")
    assert result.output == "a1b2c3d4e5f6\n" and result.exception.message == "network not found."
    assert "/networks/never" not in [path for _, path, _ in kleened.requests]
    refused = klee("network", "prune")
    assert "WARNING! This will remove all unused networks." in refused.exception.message
    assert klee("network", "prune", "-f").output == "0f9e8d7c6b5a\n"


def test_run_with_network_ip_and_ip6(klee, kleened):
    kleened.on("POST", "/containers/create", 201, {"id": "abc123def456"}).on("POST", "/networks/connect", 204)
    kleened.on("POST", "/exec/create", 404, {"message": "stop here"})
    klee("run", "-n", "testnet", "--ip", "10.13.37.7", "--ip6", "fd00::7", "-l", "vnet", "-p", "80", "img", "/bin/true")
    (_, _, create), (_, _, connect) = kleened.requests[:2]
    assert create["network_driver"] == "vnet"
    assert create["public_ports"] == [{"interfaces": [], "host_port": "80", "container_port": "80", "protocol": "tcp"}]
    assert connect == {"container": "abc123def456", "network": "testnet", "ip_address": "10.13.37.7",
                       "ip_address6": "fd00::7"}  # fmt: skip
