"""Start-up reconcile against the SIMULATED FreeBSD host: a "previous daemon" (the same drivers,
then forgotten) leaves jails, mounts, epairs, interfaces and datasets; a new Reconciler given the
store's view keeps what is wanted and removes the rest."""

from __future__ import annotations

from pathlib import Path

from kleene_protocol.ids import new_id
from kleened.platform.base import PlugSpec, Sandbox
from kleened.platform.freebsd import jail, mounts
from kleened.platform.freebsd.reconcile import Desired, Reconciler, WantedInterface
from tests.freebsd_sim.conftest import Drivers, run
from tests.freebsd_sim.host import SimHost


def plug(cidr: str) -> PlugSpec:
    return PlugSpec(endpoint_id=cidr, index=0, interface="kleene0", bridge="kleene0", cidrs=(cidr,))


async def previous_daemon(drivers: Drivers, tmp_path: Path) -> dict[str, str]:
    """What a kleened that is then killed leaves behind; returns the names of what it made."""
    net = drivers.network
    await net.create_interface("kleene0", "bridge")
    await net.configure_interface("kleene0", ["10.13.37.1/24"])
    await net.create_interface("kleene5", "loopback")  # a network since removed from the store
    image = await drivers.image()
    kept, kept_root = await drivers.jail(image, network=jail.Network("vnet"))  # still running: live restore
    kept_epair = await net.plug(Sandbox(kept, kept), plug("10.13.37.2/24"))
    gone, _ = await drivers.jail(image, network=jail.Network("vnet"))  # should not run any more
    gone_epair = await net.plug(Sandbox(gone, gone), plug("10.13.37.3/24"))
    stopped = new_id()  # stopped, but a mount was left by a crash mid-stop
    stopped_root = await drivers.storage.create_container_fs(stopped, image)
    await drivers.runtime.commands.run(mounts.mount_argv(mounts.prepare(stopped_root, tmp_path, "/data")))
    orphan = new_id()  # cloned, but the store write never happened
    await drivers.storage.create_container_fs(orphan, image)
    await drivers.storage.create_volume("userdata")
    return {"image": image, "kept": kept, "kept_epair": kept_epair, "gone": gone, "gone_epair": gone_epair,
            "stopped": stopped, "orphan": orphan, "kept_root": str(kept_root)}


def test_reconcile_after_a_crash(sim: SimHost, drivers: Drivers, tmp_path: Path):
    sim.ok("ifconfig", "bridge", "create")
    sim.ok("ifconfig", "bridge0", "name", "kleene9")  # someone else's interface with a name we want

    made = run(previous_daemon, drivers, tmp_path)
    # kleened is killed here; kleene0 loses its address meanwhile (an admin, or a host network reload)
    sim.ok("ifconfig", "kleene0", "inet", "10.13.37.1", "-alias")

    desired = Desired(containers=frozenset({made["kept"], made["gone"], made["stopped"]}),
                      running=frozenset({made["kept"]}), images=frozenset({made["image"]}),
                      interfaces={"kleene0": WantedInterface("bridge", ("10.13.37.1/24",)),
                                  "kleene9": WantedInterface("bridge"), "kleene3": WantedInterface("loopback")},
                      epairs=frozenset({made["kept_epair"]}))
    reconciler = Reconciler(drivers.runtime, drivers.network, drivers.storage)
    failed = run(reconciler.run, desired)

    assert [(a.verb, a.target) for a in failed] == [("conflict", "kleene9")]  # reported, untouched
    assert list(sim.jails()) == [made["kept"]]  # the running container survived the restart (B5)
    host = sim.interfaces()
    assert made["kept_epair"] in host["kleene0"]["members"] and made["gone_epair"] not in host
    assert host["kleene0"]["cidrs"] == ["10.13.37.1/24"]  # the missing address came back
    assert "kleene5" not in host and host["kleene3"]["kind"] == "lo" and "ktd" in host["kleene3"]["groups"]
    assert host["kleene9"]["groups"] == []
    assert mounts.under(run(drivers.runtime.mounted), made["kept_root"]) != []  # the kept jail's devfs stays
    assert run(drivers.storage.list_container_fs) == sorted([made["kept"], made["gone"], made["stopped"]])
    assert run(drivers.storage.list_volumes) == ["userdata"]  # volumes are never reconciled away
    leftovers = [m.node for m in run(drivers.runtime.mounted) if m.fstype in mounts.OURS
                 and not m.node.startswith(made["kept_root"])]
    assert leftovers == []

    async def shutdown() -> None:  # what the next stop does; then the fixture checks for leaks
        kept = Sandbox(made["kept"], made["kept"])
        await drivers.network.unplug(made["kept_epair"], plug("10.13.37.2/24"), sandbox=kept)
        for name in ("kleene0", "kleene3"):
            await drivers.network.destroy_interface(name)
        await drivers.storage.remove_volume("userdata")

    run(shutdown)
    sim.ok("ifconfig", "kleene9", "destroy")
