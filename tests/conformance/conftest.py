"""The driver conformance suite: one set of behavioural tests written against the interfaces of
`kleened.platform.base`, run for every backend (`backend` fixture):

- `linux`: the real Linux drivers on this host (root, `ip`, `nft`): bridges, netns, veths and an
  nftables table under a unique prefix, an overlay state root in a temporary directory;
- `freebsd-sim`: the FreeBSD drivers against the SIMULATED FreeBSD host of tests/freebsd_sim (a
  simulation on Linux, not FreeBSD: interfaces and pf rules are bookkeeping);
- `freebsd`: the FreeBSD drivers for real, only on a FreeBSD host (docs/freebsd.md, "Driver
  conformance suite"); elsewhere skipped, in CI too, since no FreeBSD runner exists.

Each backend gives the drivers plus a few observations the interfaces do not offer (what a
sandbox sees, the loaded rules, an interface kleened does not own, what the host still holds of
a container or of the layer storage), so the tests check effects on the host, not only what the
drivers report about themselves.

The runtime and layer storage are the objects core drives (`platform.base.Runtime` and
`LayerStorage`): on Linux runc under conmon (`MonitoredRuntime`) and overlay, on FreeBSD
`JailContainers` and `ZfsLayers`. Their base layer is the busybox userland of tests/rootfs.py
(Linux: built into the layer; FreeBSD-sim: its tarball extracted by the FreeBSD image code, as
`fetch` does; a real FreeBSD host: the base system archive).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kleened.platform.base import (
    ContainerSpec,
    Firewall,
    LayerStorage,
    NetworkDriver,
    NetworkMode,
    ProcessSpec,
    Runtime,
    Sandbox,
)
from tests import rootfs
from tests.conftest import require
from tests.freebsd_sim.conftest import (  # noqa: F401  (fixtures the freebsd-sim backend uses)
    ENV,
    Drivers,
    busybox_tarball,
    busybox_tree,
    commands,
    drivers,
    sim,
)
from tests.freebsd_sim.host import SimHost
from tests.freebsd_sim.state import processes_under

BACKENDS = ["linux", "freebsd-sim", "freebsd"]


@dataclass
class Backend:
    """The drivers under test and what the tests observe of the host through other means."""

    name: str
    prefix: str
    network: NetworkDriver
    firewall: Firewall
    storage: object  # VolumeStorage: its volume_path is sync on overlay only, so it is not used here
    make_sandbox: Callable  # async (container id) -> Sandbox, in the order core starts a container
    end_sandbox: Callable  # async (Sandbox) -> None
    inside: Callable  # (Sandbox) -> the cidrs the sandbox's own interfaces carry (loopback left out)
    rules: Callable  # () -> the firewall's loaded rules as text ("" when none)
    add_foreign: Callable  # (name) -> a bridge that kleened does not own
    remove_foreign: Callable  # (name) -> None
    runtime: Runtime
    layers: LayerStorage
    fill_layer: Callable[[Path], Awaitable[None]]  # the backend's userland into an empty layer
    traces: Callable[[str, Path], list[str]]  # (container id, its root) -> what the host still holds of it
    stored: Callable[[], list[str]]  # the layer storage's objects on the host (dirs, mounts, datasets)
    subnet_octet: int = field(default_factory=lambda: 100 + secrets.randbelow(100))
    _base: list[str] = field(default_factory=list)

    async def base_layer(self) -> str:
        """The sealed userland layer (made on first use, then shared by the test)."""
        if not self._base:
            layer_id, path = await self.layers.create_layer()
            await self.fill_layer(path)
            await self.layers.seal_layer(layer_id)
            self._base.append(layer_id)
        return self._base[0]

    def ifname(self, n: int) -> str:
        return f"{self.prefix}c{n}"

    def cidr(self, host: int, *, prefix: int = 24) -> str:
        return f"10.{self.subnet_octet}.0.{host}/{prefix}"

    def ip(self, host: int) -> str:
        return f"10.{self.subnet_octet}.0.{host}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "linux":
        yield from _linux()
    elif request.param == "freebsd-sim":
        yield _freebsd_sim(request.getfixturevalue("sim"), request.getfixturevalue("drivers"))
    else:
        if not sys.platform.startswith("freebsd"):
            pytest.skip("the real FreeBSD backend runs on a FreeBSD host only")
        yield from _freebsd_real()


# --- linux --------------------------------------------------------------------------------------


def _ip_json(*argv: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *argv], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def _linux() -> Iterator[Backend]:
    from tests.integration.platform.conftest import subreaper

    with subreaper():  # the runtime's containers and monitors are reaped by this process
        yield from _linux_backend()


def _linux_backend() -> Iterator[Backend]:
    require(sys.platform.startswith("linux"), "the linux backend runs on Linux")
    require(os.geteuid() == 0, "the linux backend needs root")
    for tool in ("ip", "nft", "runc", "conmon"):
        require(shutil.which(tool) is not None, f"needs {tool} on PATH")
    from kleened.platform.linux import mountinfo
    from kleened.platform.linux.monitored import MonitoredRuntime
    from kleened.platform.linux.netdev import LinuxNetworkDriver
    from kleened.platform.linux.nftables import NftablesFirewall
    from kleened.platform.linux.overlay import OverlayStorage
    from kleened.platform.linux.runc import RuncRuntime
    from tests.freebsd_sim.conftest import run
    from tests.integration.platform.conftest import _container_cgroups, _zombies
    from tests.integration.platform.test_linux_conmon import _monitors_of

    prefix = "kc" + secrets.token_hex(2)
    network = LinuxNetworkDriver(prefix)
    firewall = NftablesFirewall(prefix)
    tmp = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp")).resolve()  # short: attach socket paths
    storage = OverlayStorage(tmp / "state")
    runc = RuncRuntime(tmp / "run", prefix)
    runtime = MonitoredRuntime(runc)

    async def make_sandbox(container_id: str) -> Sandbox:
        sandbox = await network.create_sandbox(container_id)
        assert sandbox is not None
        return sandbox

    async def end_sandbox(sandbox: Sandbox) -> None:
        await network.destroy_sandbox(sandbox.container_id)

    def inside(sandbox: Sandbox) -> list[str]:
        found = _ip_json("-n", network.netns_name(sandbox.container_id), "addr", "show")
        return [f"{a['local']}/{a['prefixlen']}" for link in found if link["ifname"] != "lo"
                for a in link.get("addr_info", []) if a.get("scope") != "link"]

    def rules() -> str:
        done = subprocess.run(["nft", "list", "table", "inet", prefix], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    def add_foreign(name: str) -> None:
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)

    def remove_foreign(name: str) -> None:
        subprocess.run(["ip", "link", "del", name], check=True)

    async def fill_layer(path: Path) -> None:
        rootfs.build(path)

    def traces(container_id: str, root: Path) -> list[str]:
        """runc's state, the bundle (the monitor's files too), the attach link, the cgroup, the
        monitor process, mounts below the container's root."""
        found = [what for what, path in (("runc state", runc.runc_root / container_id),
                                         ("bundle", runc.bundles / container_id),
                                         ("attach link", runtime.monitors.attach_dir / container_id))
                 if os.path.lexists(path)]
        found += [f"cgroup {c}" for c in _container_cgroups(prefix) if c.endswith("/" + container_id)]
        found += [f"monitor {pid}" for pid in _monitors_of(runc.bundles / container_id)]
        found += [f"mount {m.mountpoint}" for m in mountinfo.mounts_under(root) if m.mountpoint != root]
        return found

    def stored() -> list[str]:
        found = [f"{kind} {p.name}" for kind, parent in (("layer", storage.layers), ("container", storage.containers))
                 for p in parent.iterdir()]
        return found + [f"mount {m.mountpoint}" for m in mountinfo.mounts_under(storage.root)]

    yield Backend(name="linux", prefix=prefix, network=network, firewall=firewall, storage=storage,
                  make_sandbox=make_sandbox, end_sandbox=end_sandbox, inside=inside, rules=rules,
                  add_foreign=add_foreign, remove_foreign=remove_foreign, runtime=runtime, layers=storage,
                  fill_layer=fill_layer, traces=traces, stored=stored)
    run(runtime.close)
    leaks = [link["ifname"] for link in _ip_json("link", "show") if link["ifname"].startswith(prefix)]
    leaks += [n for n in os.listdir("/run/netns") if n.startswith(prefix)] if os.path.isdir("/run/netns") else []
    leaks += ["nft table"] if rules() else []
    leaks += [f"container {c}" for c in run(runc.list_containers)]
    leaks += [f"monitor {pid}" for pid in _monitors_of(tmp)] + [f"zombie {z}" for z in _zombies()]
    leaks += [f"container filesystem {c}" for c in storage.list_container_fs()]
    leaks += [f"mount {m.mountpoint}" for m in mountinfo.mounts_under(tmp)]
    if not mountinfo.mounts_under(tmp):
        shutil.rmtree(tmp)
    assert not leaks, f"the linux drivers left behind: {leaks}"


# --- freebsd: the drivers over a simulated or a real host ---------------------------------------


def _jail_backend(name: str, built: Drivers, *, inside: Callable, rules: Callable, add_foreign: Callable,
                  remove_foreign: Callable, traces: Callable, stored: Callable) -> Backend:
    """The FreeBSD drivers, with sandboxes made in the order core will use on FreeBSD: no sandbox
    from the network driver, so the runtime's create makes the vnet jail, and the jail is it.
    The runtime and layer storage are those core drives (`JailContainers`, `ZfsLayers`)."""
    from kleened.platform.freebsd.containers import JailContainers
    from kleened.platform.freebsd.firewall import PfFirewall
    from kleened.platform.freebsd.layers import ZfsLayers
    from tests.freebsd_sim.conftest import run

    layers = ZfsLayers(built.storage)
    run(layers.prepare)

    async def fill_layer(path: Path) -> None:
        async with built.rootfs.fetched(rootfs.file_url(built.tarball), _ignore) as archive:
            await built.rootfs.extract(archive, path, _ignore)

    roots: dict[str, Path] = {}
    images: list[str] = []

    async def make_sandbox(container_id: str) -> Sandbox:
        assert await built.network.create_sandbox(container_id) is None
        if not images:
            images.append(await built.image())
        root = roots[container_id] = await built.storage.create_container_fs(container_id, images[0])
        await built.runtime.create(ContainerSpec(id=container_id, rootfs=root, hostname=container_id,
                                                 network=NetworkMode.NAMESPACE,
                                                 process=ProcessSpec(args=["true"], env=ENV)))
        return Sandbox(container_id, container_id)

    async def end_sandbox(sandbox: Sandbox) -> None:
        await built.network.destroy_sandbox(sandbox.container_id)
        await built.remove(sandbox.container_id, roots.pop(sandbox.container_id))

    return Backend(name=name, prefix=built.network.prefix, network=built.network,
                   firewall=PfFirewall(built.commands, mode="anchor", anchor=ANCHOR), storage=built.storage,
                   make_sandbox=make_sandbox, end_sandbox=end_sandbox, inside=inside, rules=rules,
                   add_foreign=add_foreign, remove_foreign=remove_foreign,
                   runtime=JailContainers(built.runtime, layers.rootfs_path), layers=layers, fill_layer=fill_layer,
                   traces=traces, stored=lambda: stored(layers))


async def _ignore(*_args: object) -> None:
    return None


def _jail_traces(container_id: str, root: Path, *, jails: Collection[str], mounted: Collection[str], rctl: str,
                 processes: Collection[int]) -> list[str]:
    """What a FreeBSD host holds of a container: its jail, mounts below its root, rctl rules, processes."""
    top = os.path.realpath(root) + "/"
    found = [f"jail {container_id}"] if container_id in jails else []
    found += [f"mount {node}" for node in mounted if node.startswith(top)]
    found += [f"rctl {rule}" for rule in rctl.splitlines() if rule.startswith(f"jail:{container_id}:")]
    return found + [f"process {pid}" for pid in processes]


def _zfs_objects(layers: object, datasets: Collection[str], snapshots: Collection[str]) -> list[str]:
    """Image and container datasets and every snapshot under kleened's root dataset."""
    layout = layers.layout  # type: ignore[attr-defined]
    below = (layout.images + "/", layout.containers + "/")
    return sorted([d for d in datasets if d.startswith(below)] + [s for s in snapshots if s.startswith(below)])


ANCHOR = "kleened"


def _freebsd_sim(host: SimHost, built: Drivers) -> Backend:
    def inside(sandbox: Sandbox) -> list[str]:
        return [c for name, i in host.interfaces(sandbox.handle).items() if name != "lo0" for c in i["cidrs"]]

    def rules() -> str:
        return "\n".join(r["text"] for r in host.pf()["anchors"].get(ANCHOR, []))

    def add_foreign(name: str) -> None:
        host.ok("ifconfig", host.ok("ifconfig", "bridge", "create").strip(), "name", name)

    def traces(container_id: str, root: Path) -> list[str]:
        info = host.jails().get(container_id)
        return _jail_traces(container_id, root, jails=host.jails(), mounted=host.mounts(), rctl="\n".join(host.rctl()),
                            processes=processes_under(info["path"]) if info else [])

    return _jail_backend("freebsd-sim", built, inside=inside, rules=rules, add_foreign=add_foreign,
                         remove_foreign=lambda name: host.ok("ifconfig", name, "destroy"), traces=traces,
                         stored=lambda layers: _zfs_objects(layers, host.datasets(), host.snapshots()))


def _freebsd_real() -> Iterator[Backend]:
    """The real FreeBSD host (never run yet: no FreeBSD machine was available; see docs/freebsd.md)."""
    from kleened.platform.freebsd import netif
    from kleened.platform.freebsd.command import Commands
    from kleened.platform.freebsd.images import FreeBSDRootfs
    from kleened.platform.freebsd.network import FreeBSDNetworkDriver
    from kleened.platform.freebsd.runtime import JailRuntime
    from kleened.platform.freebsd.storage import ZfsStorage
    from tests.freebsd_sim.conftest import run

    require(os.geteuid() == 0, "the freebsd backend needs root")
    dataset, base = os.environ.get("KLEENE_CONFORMANCE_DATASET"), os.environ.get("KLEENE_CONFORMANCE_BASE")
    if not dataset or not base:
        pytest.skip("set KLEENE_CONFORMANCE_DATASET and KLEENE_CONFORMANCE_BASE (docs/freebsd.md)")
    host = Commands()
    work = Path(tempfile.mkdtemp(prefix="kleene-conformance-"))
    built = Drivers(commands=host, storage=ZfsStorage(host, dataset), runtime=JailRuntime(host),
                    network=FreeBSDNetworkDriver(host, "kc" + secrets.token_hex(2)),
                    rootfs=FreeBSDRootfs(work, host), tarball=Path(base))
    run(built.storage.prepare)

    def tool(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def inside(sandbox: Sandbox) -> list[str]:
        found = netif.parse_ifconfig(tool("jexec", sandbox.handle, "ifconfig"))
        return [c for name, i in found.items() if name != "lo0" for c in i.cidrs]

    def rules() -> str:
        return tool("pfctl", "-a", ANCHOR, "-s", "nat") + tool("pfctl", "-a", ANCHOR, "-s", "rules")

    def add_foreign(name: str) -> None:
        tool("ifconfig", tool("ifconfig", "bridge", "create").strip(), "name", name)

    def traces(container_id: str, root: Path) -> list[str]:
        jails = set(tool("jls", "name").split())
        ps = subprocess.run(["ps", "-o", "pid=", "-J", container_id], capture_output=True, text=True)
        rctl = subprocess.run(["rctl", f"jail:{container_id}"], capture_output=True, text=True).stdout
        mounted = [line.split()[1] for line in tool("mount", "-p").splitlines() if len(line.split()) > 1]
        return _jail_traces(container_id, root, jails=jails, mounted=mounted, rctl=rctl,
                            processes=[int(p) for p in ps.stdout.split()] if ps.returncode == 0 else [])

    def stored(layers: object) -> list[str]:
        datasets = tool("zfs", "list", "-H", "-o", "name", "-r", dataset).split()
        snapshots = tool("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset).split()
        return _zfs_objects(layers, datasets, snapshots)

    yield _jail_backend("freebsd", built, inside=inside, rules=lambda: rules().strip(), add_foreign=add_foreign,
                        remove_foreign=lambda name: tool("ifconfig", name, "destroy"), traces=traces, stored=stored)
    run(built.teardown)
    shutil.rmtree(work)
