"""FreeBSDNetworkDriver and PfFirewall against the SIMULATED FreeBSD host: a bridge network with a
vnet and an ipnet container, a loopback network, published ports in the loaded pf rules, and
interfaces kleened does not own left alone. The simulation keeps interfaces and rules as state
and refuses what ifconfig, route and pfctl refuse; no packet moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleene_protocol.models import Network, PublishedPort
from kleened.core import ipam
from kleened.platform.base import PlugSpec, Sandbox
from kleened.platform.freebsd import jail, pf
from kleened.platform.freebsd.firewall import PfFirewall
from tests.freebsd_sim.conftest import Drivers, run
from tests.freebsd_sim.host import SimHost

BRIDGE = Network(id="b1b1b1b1b1b1", name="web", type="bridge", interface="kleene0", subnet="10.13.37.0/24",
                 subnet6="fd00:1::/64", gateway="<auto>", gateway6="<auto>", nat="em0", icc=True, internal=False)
LOOP = Network(id="c2c2c2c2c2c2", name="db", type="loopback", interface="kleene1", subnet="10.13.38.0/24",
               subnet6="", gateway="", gateway6="", nat="", icc=False, internal=True)
PORT = PublishedPort(interfaces=["em0"], host_port="8080", container_port="80", protocol="tcp",
                     ip_address="10.13.37.2", ip_address6="fd00:1::2")


def test_host_facts_and_sysctls(sim: SimHost, drivers: Drivers):
    async def body() -> str:
        await drivers.network.enable_forwarding(ipv6=True)
        return await drivers.network.host_gateway()

    assert run(body) == "em0"
    for key in ("net.inet.ip.forwarding", "net.inet6.ip6.forwarding"):
        assert sim.sysctl(key) == "1", key  # B23: IPv6 forwarding too
    assert sim.sysctl("net.link.bridge.pfil_bridge") == "0"  # set with the first bridge, once if_bridge is loaded


def test_interfaces_are_tagged_and_foreign_ones_refused(sim: SimHost, drivers: Drivers):
    """B6: upstream destroyed an existing interface that had the wanted name."""
    sim.ok("ifconfig", "bridge", "create")
    sim.ok("ifconfig", "bridge0", "name", "vmbridge")

    async def body() -> None:
        net = drivers.network
        await net.create_interface("kleene0", "bridge")
        await net.create_interface("kleene0", "bridge")  # ours already: nothing to do
        await net.configure_interface("kleene0", ["10.13.37.1/24", "fd00:1::1/64"])
        await net.configure_interface("kleene0", ["10.13.37.1/24", "fd00:1::1/64"])  # idempotent (B5)
        await net.create_interface("kleene1", "loopback")
        assert await net.owned_interfaces() == ["kleene0", "kleene1"]
        assert await net.interface_kind("kleene1") == "loopback"
        for name in ("vmbridge", "em0"):
            with pytest.raises(ValueError, match="not created by kleened"):
                await net.create_interface(name, "bridge")
            with pytest.raises(ValueError, match="not created by kleened"):
                await net.destroy_interface(name)
        await net.destroy_interface("kleene0")
        await net.destroy_interface("kleene1")
        await net.destroy_interface("kleene1")  # idempotent

    run(body)
    assert sim.sysctl("net.link.bridge.pfil_bridge") == "1"
    bridge = sim.interfaces()["vmbridge"]
    assert bridge["cidrs"] == [] and bridge["groups"] == []  # untouched
    sim.ok("ifconfig", "vmbridge", "destroy")


def test_vnet_and_ipnet_containers_on_a_bridge(sim: SimHost, drivers: Drivers):
    async def body() -> tuple[str, dict, dict]:
        net = drivers.network
        await net.create_interface("kleene0", "bridge")
        await net.configure_interface("kleene0", ["10.13.37.1/24", "fd00:1::1/64"])
        await net.create_interface("kleene2", "bridge")
        await net.configure_interface("kleene2", ["10.13.39.1/24"])
        image = await drivers.image()
        vnet, vroot = await drivers.jail(image, network=jail.Network("vnet"))
        sandbox = Sandbox(vnet, vnet)
        first_plug = PlugSpec(endpoint_id="e1", index=0, interface="kleene0", bridge="kleene0",
                              cidrs=("10.13.37.2/24", "fd00:1::2/64"), gateway4="10.13.37.1", gateway6="fd00:1::1")
        epair = await net.plug(sandbox, first_plug)
        # B4: a second network gets no second default route (the simulated route(8) would refuse it)
        second_plug = PlugSpec(endpoint_id="e2", index=1, interface="kleene2", bridge="kleene2",
                               cidrs=("10.13.39.2/24",), gateway4="10.13.39.1")
        second = await net.plug(sandbox, second_plug)
        inside = dict(sim.interfaces(vnet))
        routes = dict(sim.routes(vnet))
        assert await net.epairs() == {epair: vnet, second: vnet}
        # upstream's allocation (core/ipam.py) fed with what the host has: the bridge's gateway
        # address on the interface, plus the endpoints' addresses from the store
        in_use = [*await net.interface_addresses("kleene0"), "10.13.37.2"]
        assert ipam.allocate(BRIDGE.subnet, in_use) == "10.13.37.3"
        ipnet, iroot = await drivers.jail(image, network=jail.Network("ipnet", ("10.13.37.3",)))
        await net.add_address("kleene0", "10.13.37.3")
        await net.add_address("kleene0", "fd00:1::3")
        await net.set_addresses(Sandbox(ipnet, ipnet), ["10.13.37.3"], ["fd00:1::3"])  # B7: v6 live, in ip6.addr
        assert sim.jails()[ipnet]["ip4"] == ["10.13.37.3"] and sim.jails()[ipnet]["ip6"] == ["fd00:1::3"]
        await net.unplug(second, second_plug, sandbox=sandbox)  # disconnect while running
        await drivers.remove(vnet, vroot)
        await net.unplug(epair, first_plug, sandbox=None)  # after stop: the jail's end came back
        await net.remove_address("kleene0", "10.13.37.3")
        await net.remove_address("kleene0", "fd00:1::3")
        await net.remove_address("kleene0", "fd00:1::3")  # check-then-act: a second cleanup is fine
        await drivers.remove(ipnet, iroot)
        await net.destroy_interface("kleene0")
        await net.destroy_interface("kleene2")
        return epair, inside, routes

    epair, inside, routes = run(body)
    jail_end = epair[:-1] + "b"
    assert inside["lo0"]["cidrs"] == ["127.0.0.1/8"] and inside["lo0"]["up"]  # B19
    assert inside[jail_end]["cidrs"] == ["10.13.37.2/24", "fd00:1::2/64"] and inside[jail_end]["up"]
    assert routes == {"inet": "10.13.37.1", "inet6": "fd00:1::1"}


def test_published_ports_in_the_loaded_pf_rules(sim: SimHost, drivers: Drivers, tmp_path: Path):
    """Upstream's whole-file mode: the template is filled, checked by pfctl, written, loaded."""
    template = tmp_path / "pf.conf.kleene"
    template.write_text('ext_if = "em0"\nset skip on lo0\n' + pf.DEFAULT_TEMPLATE + "pass in on $ext_if proto tcp "
                        "to port 22\n")
    config = tmp_path / "pf.conf"
    firewall = PfFirewall(drivers.commands, mode="file", template_path=str(template), config_path=str(config))
    ruleset = pf.render([BRIDGE, LOOP], [PORT], host_gateway="em0", epairs={BRIDGE.id: ["epair0a"]})

    async def body() -> None:
        await firewall.enable()
        await firewall.enable()  # "already enabled" is fine
        await firewall.load(ruleset)
        template.write_text(pf.DEFAULT_TEMPLATE + "pass on $undefined_macro\n")
        with pytest.raises(Exception, match="undefined_macro"):
            await firewall.load(ruleset)  # refused by pfctl -n: /etc/pf.conf keeps the good rules

    run(body)
    loaded = [r["text"] for r in sim.pf()["main"]]
    assert "rdr on em0 inet proto tcp from any to ( em0 ) port 8080 -> 10.13.37.2 port 80" in loaded
    assert "rdr on em0 inet6 proto tcp from any to ( em0 ) port 8080 -> fd00:1::2 port 80" in loaded
    assert "pass quick on em0 inet proto tcp from any to 10.13.37.2 port 80" in loaded
    assert sim.pf()["enabled"]
    text = config.read_text()
    assert "undefined_macro" not in text and 'kleenet_b1b1b1b1b1b1_all_interfaces="{kleene0, lo0, epair0a}"' in text
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pf.conf")] == []  # no temporary left


def test_anchor_mode_never_writes_pf_conf(sim: SimHost, drivers: Drivers, tmp_path: Path):
    sim.ok("pfctl", "-f", "-", input=("\n".join(pf.anchor_hooks("kleened")) + "\npass all\n").encode())
    config = tmp_path / "pf.conf"
    firewall = PfFirewall(drivers.commands, mode="anchor", config_path=str(config), anchor="kleened")

    async def body() -> bool:
        await firewall.apply([BRIDGE], [PORT], host_gateway="em0", plugs={})
        present = await firewall.hooks_present()
        assert [r["kind"] for r in sim.pf()["main"]] == ["nat-anchor", "rdr-anchor", "anchor", "filter"]
        assert any(r["kind"] == "rdr" for r in sim.pf()["anchors"]["kleened"])
        await firewall.remove()
        return present

    assert run(body)
    assert "kleened" not in sim.pf()["anchors"]
    assert not config.exists()
