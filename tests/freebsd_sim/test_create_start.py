"""`JailRuntime.create(ContainerSpec)` then `start(container_id)`: the neutral create/start split
against the SIMULATED FreeBSD host (processes really run, chrooted in the busybox image)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleene_protocol.ids import new_id
from kleened.platform.base import BindMount, ContainerSpec, NetworkMode, ProcessSpec, TmpfsMount
from tests.freebsd_sim.conftest import ENV, Drivers, collect, run
from tests.freebsd_sim.host import SimHost


def spec_for(cid: str, root: Path, *, args: list[str], uid: int = 0, mounts: list | None = None,
             network: NetworkMode = NetworkMode.HOST) -> ContainerSpec:
    return ContainerSpec(id=cid, rootfs=root, hostname="web1", network=network, mounts=mounts or [],
                         process=ProcessSpec(args=args, env=[*ENV, "GREETING=hi there"], cwd="/tmp", uid=uid))


def test_create_makes_the_jail_and_start_runs_the_main_process(sim: SimHost, drivers: Drivers, tmp_path: Path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "note").write_text("from the host\n")

    async def body() -> tuple[bool, int, bytes, dict]:
        image = await drivers.image()
        cid = new_id()
        root = await drivers.storage.create_container_fs(cid, image)
        script = "id -u; pwd; echo $GREETING; cat /data/note; exit 7"
        spec = spec_for(cid, root, args=["sh", "-c", script], uid=1000,
                        mounts=[BindMount(source=tmp_path / "shared", destination="/data", read_only=True)])
        await drivers.runtime.create(spec)
        created = await drivers.runtime.is_running(cid)  # the jail exists before anything runs in it
        jail_state = sim.jails()[cid]
        code, out, _err = await collect(await drivers.runtime.start(cid))
        await drivers.remove(cid, root)
        return created, code, out, jail_state

    created, code, out, jail_state = run(body)
    assert created and code == 7
    assert out == b"1000\n/tmp\nhi there\nfrom the host\n"
    # the simulation has no UTS isolation: the hostname is checked as the jail parameter
    assert jail_state["params"]["persist"] == "true" and jail_state["params"]["host.hostname"] == "web1"


def test_an_addresses_mode_jail_gets_its_addresses_live(sim: SimHost, drivers: Drivers):
    """ipnet on FreeBSD: created with empty lists in both families, then `set_addresses` (jail -m)."""
    from kleened.platform.base import Sandbox

    async def body() -> tuple[list, list]:
        image = await drivers.image()
        cid = new_id()
        root = await drivers.storage.create_container_fs(cid, image)
        await drivers.runtime.create(spec_for(cid, root, args=["true"], network=NetworkMode.ADDRESSES))
        await drivers.network.set_addresses(Sandbox(cid, cid), ["10.13.37.9"], ["fd00:1::9"])
        state = sim.jails()[cid]
        await drivers.remove(cid, root)
        return state["ip4"], state["ip6"]

    assert run(body) == (["10.13.37.9"], ["fd00:1::9"])


@pytest.mark.parametrize(("change", "message"), [
    ({"mounts": [TmpfsMount(destination="/scratch")]}, "tmpfs mounts are not supported in jails yet (/scratch)"),
    ({"seccomp": "default"}, "seccomp profiles are Linux's; a jail is confined by its parameters"),
    ({"process": ProcessSpec(args=["true"], env=[], uid=4242)}, "uid 4242 has no name in the image's /etc/passwd"),
])
def test_what_a_jail_cannot_do_is_refused_before_anything_is_made(sim: SimHost, drivers: Drivers, change: dict,
                                                                   message: str):
    import dataclasses

    async def body() -> None:
        image = await drivers.image()
        cid = new_id()
        root = await drivers.storage.create_container_fs(cid, image)
        spec = dataclasses.replace(spec_for(cid, root, args=["true"]), **change)
        try:
            with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
                await drivers.runtime.create(spec)
            assert cid not in sim.jails()
            with pytest.raises(ValueError, match="was not created"):
                await drivers.runtime.start(cid)
        finally:
            await drivers.storage.remove_container_fs(cid)

    run(body)
