"""Races on the SIMULATED FreeBSD host: vnet jails plugged into one bridge and unplugged at once,
for bounded rounds with random jitter. Core serialises per container and per network change
(docs/lifecycle.md), but two containers' starts and stops do run together; the bridge and the
epair numbering are the state they share on the host.

`KLEENE_RACE_ROUNDS` (default 3 here: every simulated command starts a Python) and
`KLEENE_RACE_SEED` as in tests/integration/test_races.py.
"""

from __future__ import annotations

import os
import random
import secrets

import trio

from kleene_protocol.ids import new_id
from kleened.platform.base import ContainerSpec, NetworkMode, PlugSpec, ProcessSpec, Sandbox
from tests.freebsd_sim.conftest import ENV, Drivers, run
from tests.freebsd_sim.host import SimHost

ROUNDS = int(os.environ.get("KLEENE_RACE_ROUNDS", "3"))
SEED = int(os.environ.get("KLEENE_RACE_SEED", str(secrets.randbits(32))))
JITTER = 0.05  # seconds
BRIDGE = "kleene0"


def test_two_vnet_jails_plug_and_unplug_at_once(sim: SimHost, drivers: Drivers):
    rng = random.Random(SEED)
    net = drivers.network

    async def one(image: str, host: int, seen: dict[str, str]) -> None:
        cid = new_id()
        root = await drivers.storage.create_container_fs(cid, image)
        await drivers.runtime.create(ContainerSpec(id=cid, rootfs=root, hostname=cid, network=NetworkMode.NAMESPACE,
                                                   process=ProcessSpec(args=["true"], env=ENV)))
        sandbox = Sandbox(cid, cid)
        plug = PlugSpec(endpoint_id=cid, index=0, interface=BRIDGE, bridge=BRIDGE, cidrs=(f"10.13.37.{host}/24",),
                        gateway4="10.13.37.1")
        await trio.sleep(rng.random() * JITTER)
        end = await net.plug(sandbox, plug)
        seen[cid] = end
        await trio.sleep(rng.random() * JITTER)
        await net.unplug(end, plug, sandbox=sandbox)
        await drivers.remove(cid, root)

    async def body() -> list[list[str]]:
        await net.create_interface(BRIDGE, "bridge")
        await net.configure_interface(BRIDGE, ["10.13.37.1/24"])
        image = await drivers.image()
        rounds = []
        for _ in range(ROUNDS):
            seen: dict[str, str] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, image, 2, seen)
                nursery.start_soon(one, image, 3, seen)
            assert len(set(seen.values())) == 2, f"seed {SEED}: two jails got one epair: {seen}"
            rounds.append(sim.interfaces()[BRIDGE]["members"])
        await net.destroy_interface(BRIDGE)
        return rounds

    assert run(body, timeout=60 * ROUNDS) == [[]] * ROUNDS, f"seed {SEED}"
