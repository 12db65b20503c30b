"""Core's `Networks` service (the REST operations' logic, the store, start-up reconcile) driving the
FreeBSD network driver and pf firewall through the neutral interfaces, on the SIMULATED host: a
step towards kleened on FreeBSD (docs/freebsd.md "Phase 2: what is left"); containers are not
started here, since core cannot start jails yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleene_protocol.models import NetworkConfig
from kleened.core.errors import Conflict
from kleened.core.networks import Networks
from kleened.core.store import Store
from kleened.platform.freebsd.firewall import PfFirewall
from tests.freebsd_sim.conftest import Drivers, run
from tests.freebsd_sim.host import SimHost

ANCHOR = "kleened"


def service(drivers: Drivers, tmp_path: Path) -> Networks:
    """What a daemon start makes: a new service on the (same) store."""
    return Networks(Store(tmp_path / "metadata.sqlite"), drivers.network,
                    PfFirewall(drivers.commands, mode="anchor", anchor=ANCHOR), hosts_dir=tmp_path / "hosts")


def test_networks_are_created_with_their_rules_and_removed(sim: SimHost, drivers: Drivers, tmp_path: Path):
    networks = service(drivers, tmp_path)

    async def create() -> tuple[str, str]:
        await networks.reconcile()
        web = await networks.create(NetworkConfig(name="web", type="bridge", subnet="10.13.37.0/24", gateway="<auto>"))
        db = await networks.create(NetworkConfig(name="db", type="loopback", subnet="10.13.38.0/24", nat=""))
        with pytest.raises(Conflict, match="overlaps"):
            await networks.create(NetworkConfig(name="other", type="bridge", subnet="10.13.37.128/25"))
        return web.interface, db.interface

    web_if, db_if = run(create)
    host = sim.interfaces()
    assert host[web_if]["kind"] == "bridge" and host[web_if]["cidrs"] == ["10.13.37.1/24"]
    assert host[db_if]["kind"] == "lo"
    nat = [r["text"] for r in sim.pf()["anchors"][ANCHOR] if r["kind"] == "nat"]
    assert any("10.13.37.0/24" in rule for rule in nat)  # the bridge's subnet NATed to the host gateway

    async def remove() -> None:
        await networks.remove("db")
        await networks.remove("web")
        await networks.close()

    run(remove)
    assert not {web_if, db_if} & set(sim.interfaces())
    assert ANCHOR not in sim.pf()["anchors"]


def test_a_restart_restores_what_the_store_wants(sim: SimHost, drivers: Drivers, tmp_path: Path):
    """B5 through core: the bridge gets its missing address back; an interface of ours
    that no network owns (a crash between creating it and storing its network) goes."""
    first = service(drivers, tmp_path)

    async def body() -> str:
        await first.reconcile()
        web = await first.create(NetworkConfig(name="web", type="bridge", subnet="10.13.37.0/24", gateway="<auto>"))
        return web.interface

    web_if = run(body)
    # kleened is killed here; meanwhile the bridge loses its address
    sim.ok("ifconfig", web_if, "inet", "10.13.37.1", "-alias")
    run(drivers.network.create_interface, "kleene9", "bridge")
    second = service(drivers, tmp_path)
    run(second.reconcile)
    host = sim.interfaces()
    assert host[web_if]["cidrs"] == ["10.13.37.1/24"] and "kleene9" not in host
    assert any("10.13.37.0/24" in r["text"] for r in sim.pf()["anchors"][ANCHOR])  # rules reloaded
    run(second.close)
    assert web_if not in sim.interfaces()
