"""`Firewall` conformance: rules replaced whole from networks and ports, then removed. Runs
against every backend of conftest.py (the FreeBSD one on a SIMULATED host in CI: pf's rules are
parsed and kept, no packet moves)."""

from __future__ import annotations

from kleene_protocol.ids import new_id
from kleene_protocol.models import Network, PublishedPort
from tests.conformance.conftest import Backend
from tests.freebsd_sim.conftest import run


def test_rules_follow_the_networks_and_ports_then_go(backend: Backend):
    subnet = backend.cidr(0)
    network = Network(id=new_id(), name="conformance", type="bridge", interface=backend.ifname(6), subnet=subnet,
                      subnet6="", gateway=backend.ip(1), gateway6="", nat="", icc=True, internal=False)

    async def body() -> tuple[str, str, str]:
        gateway = await backend.network.host_gateway()
        port = PublishedPort(interfaces=[gateway] if gateway else [], host_port="18080", container_port="80",
                             protocol="tcp", ip_address=backend.ip(2), ip_address6="")
        nat = Network(**{**{f: getattr(network, f) for f in Network.__struct_fields__}, "nat": gateway})
        await backend.network.create_interface(network.interface, "bridge")
        try:
            await backend.firewall.apply([nat], [port], host_gateway=gateway, plugs={})
            with_port = backend.rules()
            await backend.firewall.apply([nat], [], host_gateway=gateway, plugs={})  # replaced, not added to
            without = backend.rules()
            await backend.firewall.remove()
            await backend.firewall.remove()  # idempotent
            return with_port, without, backend.rules()
        finally:
            await backend.network.destroy_interface(network.interface)

    with_port, without, removed = run(body)
    assert "18080" in with_port and backend.ip(2) in with_port
    assert "18080" not in without and subnet.split("/")[0] in without  # the network's own rules stay
    assert removed == ""
