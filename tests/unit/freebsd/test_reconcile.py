"""The start-up reconcile plan (platform/freebsd/reconcile.py `plan`): pure, desired vs observed."""

from __future__ import annotations

from kleened.platform.freebsd.mounts import Mounted
from kleened.platform.freebsd.netif import Interface
from kleened.platform.freebsd.reconcile import Action, Desired, Observed, WantedInterface, plan

ROOT = "/zroot/kleene/container"


def iface(name: str, *groups: str, cidrs: tuple[str, ...] = (), description: str = "") -> Interface:
    return Interface(name=name, flags={"UP"}, cidrs=list(cidrs), groups=list(groups), description=description)


def test_a_clean_host_gets_its_networks():
    desired = Desired(interfaces={"kleene0": WantedInterface("bridge", ("10.0.0.1/24",)),
                                  "kleene1": WantedInterface("loopback")})
    assert plan(desired, Observed()) == [
        Action("create_interface", "kleene0", "bridge"), Action("add_address", "kleene0", "10.0.0.1/24"),
        Action("create_interface", "kleene1", "loopback")]


def test_what_a_previous_daemon_left_is_removed_in_order():
    observed = Observed(
        jails={"c1": f"{ROOT}/c1", "c2": f"{ROOT}/c2"},
        container_roots={"c1": f"{ROOT}/c1", "c2": f"{ROOT}/c2", "c3": f"{ROOT}/c3"},
        mounts=[Mounted("devfs", f"{ROOT}/c1/dev", "devfs"), Mounted("/v", f"{ROOT}/c1/srv", "nullfs"),
                Mounted("/w", f"{ROOT}/c1/srv/in", "nullfs"), Mounted("/x", f"{ROOT}/c2/x", "nullfs"),
                Mounted("/y", "/elsewhere/y", "nullfs")],
        interfaces={"epair0a": iface("epair0a", "epair", "kleened", description="kleened:c1"),
                    "epair1a": iface("epair1a", "epair", "kleened", description="kleened:c2"),
                    "kleene0": iface("kleene0", "bridge", "kleened", cidrs=("10.0.0.1/24",)),
                    "kleene7": iface("kleene7", "bridge", "kleened"),
                    "em0": iface("em0")},
        container_datasets=frozenset({"c1", "c2", "c3", "orphan"}), image_datasets=frozenset({"i1", "i9"}))
    desired = Desired(containers=frozenset({"c1", "c2", "c3"}), running=frozenset({"c2"}), images=frozenset({"i1"}),
                      interfaces={"kleene0": WantedInterface("bridge", ("10.0.0.1/24",))},
                      epairs=frozenset({"epair1a"}))
    assert plan(desired, observed) == [
        Action("remove_jail", "c1", f"{ROOT}/c1"),
        Action("unmount", f"{ROOT}/c1/srv/in", "nullfs"),  # deepest first (B21)
        Action("unmount", f"{ROOT}/c1/srv", "nullfs"),
        Action("unmount", f"{ROOT}/c1/dev", "devfs"),
        Action("destroy_interface", "epair0a"),
        Action("destroy_interface", "kleene7"),
        Action("destroy_container_fs", "orphan"),
        Action("destroy_image", "i9"),
    ]


def test_live_interfaces_are_completed_not_recreated():
    """B5: upstream destroyed and recreated every network interface at start, stripping running
    jails of their aliases and bridge members."""
    observed = Observed(interfaces={"kleene0": iface("kleene0", "bridge", "kleened", cidrs=("10.0.0.1/24",))})
    desired = Desired(interfaces={"kleene0": WantedInterface("bridge", ("10.0.0.1/24", "fd00::1/64"))})
    assert plan(desired, observed) == [Action("add_address", "kleene0", "fd00::1/64")]


def test_someone_elses_interface_is_never_touched():
    """B6: upstream destroyed an existing interface that had the name it wanted."""
    observed = Observed(interfaces={"kleene0": iface("kleene0", "bridge"), "vm0": iface("vm0", "bridge")})
    desired = Desired(interfaces={"kleene0": WantedInterface("bridge", ("10.0.0.1/24",))})
    assert plan(desired, observed) == [Action("conflict", "kleene0", "exists and was not created by kleened")]


def test_volumes_are_never_in_the_plan():
    observed = Observed(container_datasets=frozenset(), image_datasets=frozenset())
    assert all(a.verb != "destroy_volume" for a in plan(Desired(), observed))
