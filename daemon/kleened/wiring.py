"""Build the daemon's services for this host: pick the platform drivers and connect them.

This is the only module that names concrete drivers; core receives them as interfaces.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from kleene_protocol import API_VERSION
from kleene_protocol.models import RuntimeVersion, Version
from kleene_protocol.operations import Listener

from . import __version__
from .config import Config, parse_listener
from .core.builder.build import Builder
from .core.commit import Commits
from .core.containers import Containers
from .core.copies import Copies
from .core.events import Events
from .core.execs import Execs
from .core.images import Images
from .core.isolation import Isolation
from .core.lifecycle import Locks
from .core.logs import Logs
from .core.networks import Networks
from .core.oci.interfaces import LayerFiles
from .core.oci.service import OciImages, RegistrySettings
from .core.restarts import Restarts
from .core.services import Services
from .core.stats import Stats
from .core.store import Store
from .core.supervisor import Supervisor
from .core.system import System
from .core.volumes import Volumes
from .platform.base import (
    DiskSizes,
    Firewall,
    HostCommandError,
    HostFacts,
    NetworkDriver,
    RootfsSource,
    Runtime,
    UserNamespace,
)

log = logging.getLogger(__name__)
SHUTDOWN_STOP_DEADLINE = 20.0  # seconds to stop every container at shutdown
NETWORK_CLOSE_DEADLINE = 5.0  # seconds to remove the networks' host state at shutdown


def _version(runtimes: list[RuntimeVersion]) -> Version:
    return Version(
        version=__version__,
        api_version=API_VERSION,
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=sys.version.split()[0],
        runtimes=runtimes,
    )


def _listeners(config: Config) -> list[Listener]:
    parsed = [parse_listener(entry) for entry in config.api_listening_sockets]
    return [Listener(kind="unix" if p.unix_path else "tcp", address=p.unix_path or p.bind, tls=p.tls) for p in parsed]


def _registry_settings(config: Config) -> RegistrySettings:
    return RegistrySettings(
        default_registry=config.default_registry, insecure=frozenset(config.insecure_registries),
        auth_file=Path(config.registry_auth_file) if config.registry_auth_file else None,
        concurrency=config.registry_concurrency, retries=config.registry_retries,
    )


Backend = Literal["linux", "freebsd", "freebsd-simulated"]
BACKENDS: dict[str, Backend] = {"linux": "linux", "freebsd": "freebsd"}  # sys.platform prefix -> backend
# The FreeBSD drivers against stand-in tools found on PATH (tests/freebsd_sim): a test rig on
# Linux, never FreeBSD support.
SIMULATED: Backend = "freebsd-simulated"


def select_backend(sys_platform: str, configured: str) -> Backend:
    """The drivers for this host: the config's `backend`, or by the OS when it is "auto".
    Raises ValueError with a one-line reason when the host cannot run the chosen drivers."""
    found = next((backend for prefix, backend in BACKENDS.items() if sys_platform.startswith(prefix)), None)
    if configured == "auto":
        if found is None:
            raise ValueError(f"kleened has drivers for Linux and FreeBSD, not for '{sys_platform}'")
        return found
    if configured == SIMULATED:
        if found != "linux":
            raise ValueError(f"the {SIMULATED} backend is a test rig for Linux hosts, not for '{sys_platform}'")
        return SIMULATED
    if configured not in BACKENDS.values():
        raise ValueError(f"unknown backend '{configured}': use auto, linux or freebsd")
    if found != configured:
        raise ValueError(f"the {configured} backend cannot run on '{sys_platform}'")
    return BACKENDS[configured]


@dataclass
class HostDrivers:
    """One backend's drivers, as core receives them."""

    runtime: Runtime
    storage: Any  # LayerStorage and VolumeStorage
    rootfs: RootfsSource
    network: NetworkDriver
    firewall: Firewall
    facts: HostFacts
    sizes: DiskSizes
    layer_files: LayerFiles
    default_pids_limit: int
    userns: UserNamespace | None = None
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def _linux_drivers(config: Config, root: Path) -> HostDrivers:
    from .platform.linux.diskusage import OverlaySizes, cgroup_mode
    from .platform.linux.idmap import RangeError, parse_remap
    from .platform.linux.monitored import MonitoredRuntime
    from .platform.linux.netdev import LinuxNetworkDriver
    from .platform.linux.nftables import NftablesFirewall
    from .platform.linux.overlay import OverlayStorage
    from .platform.linux.reaper import become_subreaper, reap_orphans
    from .platform.linux.rootfs import LinuxRootfs
    from .platform.linux.runc import RuncRuntime
    from .platform.linux.whiteouts import OverlayWhiteouts
    from .platform.oci_layers import TarLayerFiles

    become_subreaper()
    try:
        runtime = MonitoredRuntime(RuncRuntime(root, config.host_prefix, seccomp_profile=config.seccomp_profile))
        userns = parse_remap(config.userns_remap) if config.userns_remap else None
    except (ValueError, RangeError) as exc:
        raise SystemExit(f"kleened: {exc}") from None
    return HostDrivers(
        runtime=runtime, storage=OverlayStorage(root), rootfs=LinuxRootfs(root / "tmp"),
        network=LinuxNetworkDriver(config.host_prefix), firewall=NftablesFirewall(config.host_prefix),
        facts=HostFacts(os=platform.system(), kernel=platform.release(), storage_driver="overlay",
                        cgroup_mode=cgroup_mode()),
        sizes=OverlaySizes(root, root / "buildcache"), layer_files=TarLayerFiles(OverlayWhiteouts()),
        default_pids_limit=config.default_pids_limit, userns=userns, background=[reap_orphans],
    )


async def _freebsd_drivers(config: Config, root: Path, *, simulated: bool) -> HostDrivers:
    """Jails on ZFS with epair/bridge and pf (docs/freebsd.md). `simulated`: the host tools are
    looked up on PATH (the stand-ins of tests/freebsd_sim) instead of FreeBSD's own paths."""
    from .platform.freebsd.command import Commands
    from .platform.freebsd.containers import JailContainers
    from .platform.freebsd.firewall import PfFirewall
    from .platform.freebsd.images import FreeBSDRootfs
    from .platform.freebsd.layers import ZfsLayers, ZfsSizes
    from .platform.freebsd.network import FreeBSDNetworkDriver
    from .platform.freebsd.runtime import JailRuntime
    from .platform.freebsd.settings import from_config
    from .platform.freebsd.storage import ZfsStorage
    from .platform.linux.whiteouts import OverlayWhiteouts
    from .platform.oci_layers import TarLayerFiles

    if simulated:
        log.warning("backend %s: the FreeBSD drivers run against stand-in tools on PATH (a test rig)", SIMULATED)
    settings = from_config(config)
    commands = Commands.from_path() if simulated else Commands()
    if config.live_restore:
        raise SystemExit("kleened: live_restore is not available with the FreeBSD drivers: jails do not outlive "
                         "kleened yet (docs/freebsd.md)")
    try:
        JailRuntime.check_seccomp(config.seccomp_profile)
        if config.userns_remap:
            JailRuntime.check_userns()
        storage = ZfsLayers(ZfsStorage(commands, settings.kleene_root))
        await storage.prepare()
        firewall = PfFirewall(commands, mode=settings.pf_mode, template_path=settings.pf_config_template_path,
                              config_path=settings.pf_config_path, anchor=settings.pf_anchor)
    except (ValueError, HostCommandError) as exc:
        raise SystemExit(f"kleened: {exc}") from None
    return HostDrivers(
        runtime=JailContainers(JailRuntime(commands), storage.rootfs_path), storage=storage,
        rootfs=FreeBSDRootfs(root / "tmp", commands),
        network=FreeBSDNetworkDriver(commands, config.host_prefix), firewall=firewall,
        facts=HostFacts(os="FreeBSD (simulated)" if simulated else platform.system(), kernel=platform.release(),
                        storage_driver="zfs", cgroup_mode="none"),
        sizes=ZfsSizes(storage), layer_files=TarLayerFiles(OverlayWhiteouts()),
        default_pids_limit=config.default_pids_limit,
    )


UNTRIED = ("the FreeBSD drivers have only run on a simulated host so far (docs/freebsd.md); "
           "set `backend: freebsd` in the config to run them on this host")


def check_untried(backend: Backend, configured: str) -> None:
    """A root daemon does not try untried drivers on a real host unless it was asked to by name:
    `auto` on FreeBSD refuses with one line; `freebsd` starts them with a warning."""
    if backend != "freebsd":
        return
    if configured != "freebsd":
        raise ValueError(UNTRIED)
    log.warning("backend freebsd: these drivers have not run on a real FreeBSD host before (docs/freebsd.md)")


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[Services]:
    """Services ready to serve; on exit every container is stopped and the store closed."""
    try:
        backend = select_backend(sys.platform, config.backend)
        check_untried(backend, config.backend)
    except ValueError as exc:
        raise SystemExit(f"kleened: {exc}") from None
    from .platform.base import CopyLimits
    from .platform.container_files import ChrootFiles
    from .platform.linux.buildhost import BuildHost, host_platform
    from .platform.oci_archive import HostArchives
    from .platform.posix.copying import HostFiles
    from .platform.registry_http import HttpxTransport

    log.info("kleened %s starting", __version__)
    root = Path(config.state_root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    if backend == "linux":
        drivers = _linux_drivers(config, root)
    else:
        drivers = await _freebsd_drivers(config, root, simulated=backend == SIMULATED)
    runtime, storage, rootfs = drivers.runtime, drivers.storage, drivers.rootfs
    isolation = Isolation(runtime, default_pids_limit=drivers.default_pids_limit, userns=drivers.userns)
    store = Store(root / "metadata.sqlite")
    supervisor = Supervisor(runtime, grace=config.stop_timeout)
    locks = Locks()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            restarts = Restarts()
            await nursery.start(restarts.run)
            for task in drivers.background:
                nursery.start_soon(task)
            events = Events(history=config.events_history, buffer=config.events_buffer)
            logs = Logs(root / "logs", max_size=config.log_max_size, max_files=config.log_max_files,
                        buffer=config.log_buffer, recent=config.log_recent)
            images = Images(store, storage, rootfs, events=events, locks=locks)
            volumes = Volumes(store, storage, events=events, locks=locks)
            networks = Networks(store, drivers.network, drivers.firewall, hosts_dir=root / "hosts",
                                is_running=supervisor.is_running, events=events, locks=locks)
            containers = Containers(store, images, volumes, storage, runtime, supervisor, networks,
                                    dataset_root=str(root), logs=logs, events=events, locks=locks,
                                    isolation=isolation, restarts=restarts)
            transport = HttpxTransport(config.registry_ca_file)
            oci = OciImages(store=store, images=images, storage=storage, transport=transport,
                            files=drivers.layer_files, archives=HostArchives(root / "tmp" / "oci"),
                            settings=_registry_settings(config))
            build_host = BuildHost(root / "buildcache", root / "tmp")
            builds = Builder(store=store, images=images, containers=containers, networks=networks,
                             storage=storage, files=HostFiles(), tmp_dir=root / "tmp",
                             host=build_host, platform=host_platform(),
                             pull=oci.pull_for_build)
            log.info("reconciling the host with the store")
            await reconcile(containers, images, networks, rootfs, builds, oci, live_restore=config.live_restore)
            version = _version([RuntimeVersion(name=runtime.name, version=runtime.version())])
            system = System(store, containers, images, volumes, networks, version=version,
                            facts=drivers.facts, sizes=drivers.sizes, state_root=str(root),
                            listeners=_listeners(config))
            services = Services(
                store=store, volumes=volumes, networks=networks, images=images, containers=containers,
                execs=Execs(containers, supervisor, events=events, detach_keys=config.detach_keys,
                            attach_buffer=config.attach_buffer), supervisor=supervisor, events=events,
                version=version, oci=oci, system=system,
                builds=builds,
                stats=Stats(containers, supervisor, runtime, storage),
                copies=Copies(containers, ChrootFiles(), CopyLimits(config.cp_max_bytes, config.cp_max_entries),
                              storage.volume_path),
                commits=Commits(containers, images, storage),
            )
            try:
                yield services
            finally:
                # With live restore, running containers (and the networks, rules and cgroup parent
                # they use) stay for the next daemon; with nothing running it is a clean stop.
                leaving = config.live_restore and bool(supervisor.running_containers())
                if leaving:
                    supervisor.leave_running()
                else:
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_STOP_DEADLINE):
                        await containers.stop_all()
                        if not supervisor.running_containers():
                            await runtime.close()
                with trio.CancelScope(shield=True), trio.move_on_after(NETWORK_CLOSE_DEADLINE):
                    if not leaving:
                        await networks.close()  # bridges, namespaces and the nft table: reconcile remakes them
                    await transport.aclose()
                nursery.cancel_scope.cancel()
    finally:
        store.close()


async def reconcile(containers: Containers, images: Images, networks: Networks, rootfs: RootfsSource,
                    builds: Builder, oci: OciImages, *, live_restore: bool = False) -> None:
    """Start-up: make the host match the store. Each step logs what it cannot do and the next
    one runs anyway: the daemon always comes up and serves what works."""

    async def layer_records() -> None:
        oci.reconcile()

    steps = [
        ("clear the work directory", lambda: trio.to_thread.run_sync(rootfs.cleanup)),
        ("reconcile containers", lambda: containers.reconcile(live_restore=live_restore)),
        ("remove unused layers", images.collect_garbage),
        ("drop the records of removed layers", layer_records),
        ("reconcile networks", networks.reconcile),
        ("remove what builds left", builds.reconcile),
    ]
    for what, step in steps:
        try:
            await step()
        except Exception:
            log.exception("start-up: could not %s; going on", what)
