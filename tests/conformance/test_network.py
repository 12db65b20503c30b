"""`NetworkDriver` conformance: interfaces, ownership, sandboxes and plugs, address-only mode.
Runs against every backend of conftest.py (the FreeBSD one on a SIMULATED host in CI)."""

from __future__ import annotations

import pytest

from kleene_protocol.ids import new_id
from kleened.platform.base import PlugSpec
from tests.conformance.conftest import Backend
from tests.freebsd_sim.conftest import run


def test_interfaces_are_created_configured_and_destroyed(backend: Backend):
    net, name = backend.network, backend.ifname(0)

    async def body() -> None:
        assert await net.interface_kind(name) is None
        await net.create_interface(name, "bridge")
        assert await net.interface_kind(name) == "bridge"
        assert await net.is_owned(name) and name in await net.owned_interfaces()
        for _ in range(2):  # idempotent: start-up reconcile reruns it on live interfaces
            await net.configure_interface(name, [backend.cidr(1)], [], ipv6=False)
        assert await net.interface_addresses(name) == [backend.cidr(1)]
        await net.destroy_interface(name)
        await net.destroy_interface(name)  # idempotent
        assert await net.interface_kind(name) is None and name not in await net.owned_interfaces()

    run(body)


def test_an_interface_kleened_did_not_create_is_never_destroyed(backend: Backend):
    net, name = backend.network, backend.ifname(1)
    backend.add_foreign(name)
    try:
        async def body() -> None:
            assert await net.interface_kind(name) == "bridge"
            assert not await net.is_owned(name) and name not in await net.owned_interfaces()
            with pytest.raises(ValueError, match="not created by kleened"):
                await net.destroy_interface(name)
            assert await net.interface_kind(name) == "bridge"

        run(body)
    finally:
        backend.remove_foreign(name)


def test_a_sandbox_is_plugged_into_two_networks_and_unplugged(backend: Backend):
    net = backend.network
    first_if, second_if = backend.ifname(2), backend.ifname(3)
    first = PlugSpec(endpoint_id=new_id(), index=0, interface=first_if, bridge=first_if, cidrs=(backend.cidr(2),),
                     gateway4=backend.ip(1))
    second = PlugSpec(endpoint_id=new_id(), index=1, interface=second_if, bridge=second_if,
                      cidrs=(f"10.{backend.subnet_octet}.1.2/24",))

    async def body() -> tuple[list[str], list[str]]:
        await net.create_interface(first_if, "bridge")
        await net.configure_interface(first_if, [backend.cidr(1)], [], ipv6=False)
        await net.create_interface(second_if, "bridge")
        await net.configure_interface(second_if, [f"10.{backend.subnet_octet}.1.1/24"], [], ipv6=False)
        cid = new_id()
        sandbox = await backend.make_sandbox(cid)
        ends = [await net.plug(sandbox, first), await net.plug(sandbox, second)]
        both = backend.inside(sandbox)
        for end in ends:  # the host ends exist and are kleened's (start-up reconcile keeps them)
            assert await net.interface_kind(end) is not None and await net.is_owned(end)
        await net.unplug(ends[1], second, sandbox=sandbox)  # a disconnect while it runs
        await net.unplug(ends[1], second, sandbox=sandbox)  # idempotent
        one = backend.inside(sandbox)
        assert await net.interface_kind(ends[1]) is None
        await backend.end_sandbox(sandbox)
        await net.unplug(ends[0], first, sandbox=None)  # after the sandbox is gone
        assert await net.interface_kind(ends[0]) is None
        assert cid not in await net.sandboxes()
        await net.destroy_interface(first_if)
        await net.destroy_interface(second_if)
        return sorted(both), one

    both, one = run(body)
    assert both == sorted([backend.cidr(2), f"10.{backend.subnet_octet}.1.2/24"])
    assert one == [backend.cidr(2)]


def test_a_plug_needs_an_existing_network_interface(backend: Backend):
    """A failed plug leaves nothing behind (the fixtures check for leaked links)."""
    net = backend.network
    plug = PlugSpec(endpoint_id=new_id(), index=0, interface=backend.ifname(4), bridge=backend.ifname(4),
                    cidrs=(backend.cidr(2),))

    async def body() -> None:
        sandbox = await backend.make_sandbox(new_id())
        try:
            with pytest.raises(Exception):  # noqa: B017  (HostCommandError; the message is the tool's)
                await net.plug(sandbox, plug)
            assert backend.inside(sandbox) == []
        finally:
            await backend.end_sandbox(sandbox)

    run(body)


def test_address_only_mode_adds_host_addresses_once(backend: Backend):
    net, name = backend.network, backend.ifname(5)
    v6 = f"fd00:{backend.subnet_octet}::9"

    async def body() -> tuple[list[str], list[str]]:
        await net.create_interface(name, "loopback")
        await net.configure_interface(name, [], [], ipv6=False)
        for _ in range(2):
            await net.add_address(name, backend.ip(9))
            await net.add_address(name, v6)
        added = await net.interface_addresses(name)
        for _ in range(2):  # check-then-act: stop and the exit handler may both clean up
            await net.remove_address(name, backend.ip(9))
            await net.remove_address(name, v6)
        removed = await net.interface_addresses(name)
        await net.destroy_interface(name)
        return sorted(added), removed

    added, removed = run(body)
    assert added == sorted([f"{backend.ip(9)}/32", f"{v6}/128"]) and removed == []
