"""Networks: the REST operations, the container drivers' network side, and the host state.

A *network* (type loopback, bridge or custom) is an interface containers are plugged into; an
*endpoint* is one container's membership, with the addresses it keeps while stopped. Driver
`host` shares the host stack and `disabled` gets a private stack with `lo` only; the drivers the
`NetworkDriver` calls sandboxed (`vnet`, and `ipnet` on Linux) get a *sandbox* with one *plug*
per endpoint while they run: a named netns the network driver makes before the runtime creates
the container (Linux, `prepare`), or the vnet jail the runtime makes, plugged right after
`Runtime.create` (FreeBSD, `attach`). On Linux, ipnet cannot share the host stack restricted to
some addresses, so it gets a namespace like vnet and keeps upstream's rules (network types, hot
connect) and addresses; see docs/networking.md. The other drivers are *address-only* (ipnet on
FreeBSD): the container's addresses are aliases on the networks' interfaces and the jail's own
address lists.

Host state (interfaces, sandboxes, plugs, the firewall's rules) is derived from the store:
`reconcile()` rebuilds it at start and removes what no stored object owns; `reapply()` reloads
the rules (after a host firewall reload). One lock serialises every change, so allocation and the table never see
a half-made change. Messages are upstream's where upstream has one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Literal

import trio

from kleene_protocol.ids import new_id
from kleene_protocol.models import EndPoint, EndPointConfig, Network, NetworkConfig, NetworkInspect, PublishedPort
from kleene_protocol.names import name_error

from .. import faults
from ..platform.base import Firewall, HostCommandError, NetworkDriver, NetworkMode, PlugSpec, Sandbox
from . import ipam
from .clock import now_iso
from .errors import Conflict, Internal, InvalidArgument, NotFound
from .events import Events
from .ipam import AUTO, ENDPOINT, HOST_GATEWAY, NETWORK, EndpointRecord, Live, NetworkRecord, Plug
from .lifecycle import Locks
from .records import CONTAINER, ContainerRecord
from .resolve import resolve
from .store import Store

log = logging.getLogger(__name__)


class Networks:
    def __init__(self, store: Store, host: NetworkDriver, firewall: Firewall, *, hosts_dir: Path,
                 is_running: Callable[[str], bool] = lambda _id: False, events: Events | None = None,
                 locks: Locks | None = None) -> None:
        self._events = events if events is not None else Events()
        self._store = store
        self._host = host
        self._firewall = firewall
        self._hosts_dir = hosts_dir
        self._departed: dict[str, set[str]] = {}  # removed container -> its networks, until remove_container
        self._is_running = is_running
        self._locks = locks if locks is not None else Locks()
        # Guards every network, endpoint, plug and the nft table; always taken last (after any
        # container lock), so connect, disconnect and a container's start never deadlock.
        self._lock = trio.Lock()
        self._live: dict[str, Live] = {}
        self._host_gateway = ""

    # --- queries ----------------------------------------------------------------------------

    def get(self, ident: str, message: str = "network not found") -> NetworkRecord:
        network_id = resolve(self._store, NETWORK, ident)
        record = self._store.get(NETWORK, network_id, NetworkRecord) if network_id else None
        if record is None:
            raise NotFound(message)
        return record

    def _records(self) -> list[NetworkRecord]:
        return self._store.all(NETWORK, NetworkRecord, order="name ASC")

    def list(self) -> list[Network]:
        return [r.to_api() for r in self._records()]

    def inspect(self, ident: str) -> NetworkInspect:
        record = self.get(ident)
        return NetworkInspect(network=record.to_api(),
                              network_endpoints=[self._api(e) for e in self._endpoints(network_id=record.id)])

    def endpoints_of(self, container_id: str) -> list[EndPoint]:
        """For container inspect; `epair` is the host end of the plug while the container runs."""
        return [self._api(e) for e in self._endpoints(container_id=container_id)]

    def _api(self, endpoint: EndpointRecord) -> EndPoint:
        live = self._live.get(endpoint.container_id)
        plug = live.plugs.get(endpoint.id) if live else None
        return endpoint.to_api(plug.host_end if plug else None)

    def _endpoints(self, *, container_id: str | None = None, network_id: str | None = None) -> list[EndpointRecord]:
        found = self._store.all(ENDPOINT, EndpointRecord, order="created ASC")
        return [e for e in found if container_id in (None, e.container_id) and network_id in (None, e.network_id)]

    def _running(self, container_id: str) -> bool:
        return container_id in self._live or self._is_running(container_id)

    # --- create, remove, prune ----------------------------------------------------------------

    async def create(self, config: NetworkConfig) -> NetworkRecord:
        """Validate, make the interface (loopback, bridge), store, reload the table.

        Unlike upstream, an existing interface is never destroyed unless the daemon made it.
        """
        if error := name_error("network", config.name):
            raise InvalidArgument(error)
        ipam.validate_config(config)
        async with self._lock:
            if self._store.ids_by_name(NETWORK, config.name):
                raise Conflict("network name is already taken")
            for subnet in (config.subnet, config.subnet6):
                if (other := ipam.overlapping(subnet, self._records())) is not None:
                    raise Conflict(f"subnet {subnet} overlaps the subnet of network '{other.name}'")
            interface, owned = await self._choose_interface(config)
            nat = config.nat
            if nat == HOST_GATEWAY:
                nat = self._host_gateway = await self._host.host_gateway()
            record = NetworkRecord(
                id=new_id(), name=config.name, type=config.type, interface=interface, subnet=config.subnet,
                subnet6=config.subnet6, gateway=config.gateway, gateway6=config.gateway6, nat=nat,
                icc=config.icc, internal=config.internal, created=now_iso(), owned=owned,
            )
            if config.type == "bridge":  # upstream: an <auto> gateway is the first address, on the bridge
                for attr, subnet in (("gateway", config.subnet), ("gateway6", config.subnet6)):
                    if getattr(record, attr) == AUTO:
                        gateway = ipam.first_host(subnet) if subnet else ""
                        setattr(record, attr, gateway)
                        if gateway:
                            record.addresses.append(ipam.cidr(gateway, subnet))
            try:
                if owned:
                    await self._host.create_interface(interface, _kind(record))
                    await self._configure(record)
                self._store.put(NETWORK, record.id, record, name=record.name, created=record.created)
                await self._apply_firewall()
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    self._store.delete(NETWORK, record.id)
                    if owned:
                        await self._host.destroy_interface(interface)
                if isinstance(exc, HostCommandError):
                    raise Internal(f"could not create network: {exc}") from None
                raise
        log.info("network created", extra={"network": record.id, "interface": interface})
        self._events.publish("network", "create", record.id, name=record.name, type=record.type)
        return record

    async def _choose_interface(self, config: NetworkConfig) -> tuple[str, bool]:
        """(interface, owned): `<prefix><N>` when none is given; custom ones must exist."""
        holders = {r.interface: r.name for r in self._records()}
        name = config.interface
        if config.type == "custom":
            if await self._host.interface_kind(name) is None:
                raise Conflict(f"interface '{name}' does not exist")
            if name in holders and await self._host.is_owned(name):
                raise Conflict(f"interface '{name}' belongs to network '{holders[name]}'")
            return name, False
        if not name:
            taken = set(holders)
            while await self._host.interface_kind(name := ipam.interface_name(self._host.prefix, taken)) is not None:
                taken.add(name)  # exists on the host but is no network's: leave it alone
            return name, True
        if name in holders:
            raise Conflict(f"interface '{name}' is already used by network '{holders[name]}'")
        if await self._host.interface_kind(name) is not None:
            if not await self._host.is_owned(name):
                raise Conflict(f"interface '{name}' already exists and was not created by kleened")
            await self._host.destroy_interface(name)  # ours, left by a crash: no network owns it
        return name, True

    async def _configure(self, record: NetworkRecord) -> None:
        await self._host.configure_interface(record.interface, record.addresses, ipam.bridge_routes(record),
                                             ipv6=bool(record.subnet6))

    async def remove(self, ident: str) -> str:
        """Disconnect every container (unplugging running ones), forget, destroy our interface."""
        async with self._lock:
            record = self.get(ident, "network not found.")
            await self._remove_locked(record)
        self._after_remove(record)
        return record.id

    async def _remove_locked(self, record: NetworkRecord) -> None:
        for endpoint in self._endpoints(network_id=record.id):
            await self._unplug(endpoint)
            self._store.delete(ENDPOINT, endpoint.id)
        self._store.delete(NETWORK, record.id)
        try:
            await self._apply_firewall()
            if record.owned:
                await self._host.destroy_interface(record.interface)
        except (HostCommandError, ValueError) as exc:  # ValueError: the interface is no longer ours
            raise Internal(f"network removed, but cleaning the host failed: {exc}") from None

    def _after_remove(self, record: NetworkRecord) -> None:
        self._refresh_hosts()
        log.info("network removed", extra={"network": record.id})
        self._events.publish("network", "remove", record.id, name=record.name)

    async def prune(self) -> list[str]:
        """Remove every network without endpoints, oldest first (upstream's order)."""
        removed = []
        for candidate in self._store.all(NETWORK, NetworkRecord, order="created ASC"):
            async with self._lock:
                record = self._store.get(NETWORK, candidate.id, NetworkRecord)
                if record is None or self._endpoints(network_id=record.id):
                    continue  # removed, or connected, meanwhile
                await self._remove_locked(record)
            self._after_remove(record)
            removed.append(record.id)
        return removed

    # --- connect, disconnect -------------------------------------------------------------------

    def _container(self, ident: str) -> ContainerRecord:
        container_id = resolve(self._store, CONTAINER, ident.lstrip("/"))
        record = self._store.get(CONTAINER, container_id, ContainerRecord) if container_id else None
        if record is None:
            raise NotFound("container not found")
        return record

    async def connect(self, config: EndPointConfig) -> EndPoint:
        """Upstream's checks in upstream's order; a running ipnet container is plugged at once."""
        container_id = self._container(config.container).id
        async with self._locks.hold(("container", container_id)), self._lock:
            container = self._container(container_id)
            network = self.get(config.network)
            if self._endpoints(container_id=container.id, network_id=network.id):
                raise Conflict("container already connected to the network")
            driver = container.network_driver
            if driver in ("host", "disabled"):
                raise Conflict(f"containers with the '{driver}' network-driver cannot connect to networks.")
            if driver == "vnet" and network.type != "bridge":
                raise Conflict(f"containers using the 'vnet' network-driver can't connect to {network.type} networks")
            if driver == "vnet" and self._running(container.id):
                raise Conflict("cannot connect a running vnet container to a network")
            used = [*await self._interface_addresses(network), network.gateway, network.gateway6]
            for e in self._endpoints(network_id=network.id):
                used += [e.ip_address, e.ip_address6]
            endpoint = EndpointRecord(
                id=new_id(), network_id=network.id, container_id=container.id, created=now_iso(),
                ip_address=ipam.choose_address(config.ip_address, network.subnet, used, version=4),
                ip_address6=ipam.choose_address(config.ip_address6, network.subnet6, used, version=6),
            )
            self._store.put(ENDPOINT, endpoint.id, endpoint, name=container.id, created=endpoint.created)
            faults.point("network.connect.stored")
            try:
                if container.id in self._live:
                    await self._plug(container, endpoint, network)
                await self._apply_firewall()
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await self._unplug(endpoint)
                    self._store.delete(ENDPOINT, endpoint.id)
                if isinstance(exc, HostCommandError):
                    raise Internal(f"could not connect the container: {exc}") from None
                raise
        self._refresh_hosts()
        self._events.publish("network", "connect", network.id, name=network.name, container=container.id)
        return self._api(endpoint)

    async def disconnect(self, network_ident: str, container_ident: str) -> None:
        """Upstream checks the container first. Running containers lose the plug at once."""
        container_id = self._container(container_ident).id
        async with self._locks.hold(("container", container_id)), self._lock:
            container = self._container(container_id)
            network = self.get(network_ident)
            endpoints = self._endpoints(container_id=container.id, network_id=network.id)
            if not endpoints:
                raise NotFound("endpoint configuration not found")
            await self._unplug(endpoints[0])
            faults.point("network.disconnect.unplugged")
            self._store.delete(ENDPOINT, endpoints[0].id)
            await self._apply_firewall()
        self._refresh_hosts()
        self._events.publish("network", "disconnect", network.id, name=network.name, container=container.id)

    # --- plugs ---------------------------------------------------------------------------------

    async def _interface_addresses(self, network: NetworkRecord) -> list[str]:
        if network.owned:
            return list(network.addresses)
        return await self._host.interface_addresses(network.interface)

    async def _plug_spec(self, container: ContainerRecord, live: Live, endpoint: EndpointRecord,
                         network: NetworkRecord) -> PlugSpec:
        """What `endpoint` is plugged as in `live` (its next free index)."""
        index = min(set(range(len(live.plugs) + 1)) - {p.spec.index for p in live.plugs.values()})
        bridged = network.owned or await self._host.interface_kind(network.interface) == "bridge"
        cidrs = [ipam.cidr(a, s) for a, s in ((endpoint.ip_address, network.subnet),
                                               (endpoint.ip_address6, network.subnet6)) if a]
        gateway4, gateway6 = ipam.default_routes(container.network_driver, network, endpoint,
                                                 await self._interface_addresses(network), bridged=bridged)
        return PlugSpec(endpoint_id=endpoint.id, index=index, interface=network.interface,
                        bridge=network.interface if bridged else None, cidrs=tuple(cidrs),
                        gateway4=gateway4, gateway6=gateway6)

    async def _plug(self, container: ContainerRecord, endpoint: EndpointRecord, network: NetworkRecord) -> None:
        """Connect the running container to `network`: a plug into its sandbox, or in
        address-only mode its addresses on the network's interface, then the sandbox's lists."""
        live = self._live[container.id]
        assert live.sandbox is not None, "running containers have their sandbox"
        if live.address_only:
            held = live.addresses.setdefault(endpoint.id, [])
            for address in (endpoint.ip_address, endpoint.ip_address6):
                if address:
                    await self._host.add_address(network.interface, address)
                    held.append((network.interface, address))
            await self._set_addresses(live)
            return
        spec = await self._plug_spec(container, live, endpoint, network)
        host_end = await self._host.plug(live.sandbox, spec)
        live.plugs[endpoint.id] = Plug(network_id=network.id, host_end=host_end, spec=spec)

    async def _set_addresses(self, live: Live) -> None:
        assert live.sandbox is not None
        held = [address for pairs in live.addresses.values() for _interface, address in pairs]
        await self._host.set_addresses(live.sandbox, [a for a in held if ":" not in a], [a for a in held if ":" in a])

    async def _unplug(self, endpoint: EndpointRecord) -> None:
        live = self._live.get(endpoint.container_id)
        if live is not None and live.address_only:
            held = live.addresses.pop(endpoint.id, [])
            if held and live.sandbox is not None:
                await self._set_addresses(live)
            for interface, address in held:
                await self._host.remove_address(interface, address)
            return
        plug = live.plugs.pop(endpoint.id, None) if live else None
        if plug is not None:
            await self._host.unplug(plug.host_end, plug.spec, sandbox=live.sandbox)

    # --- the container side (called by the container lifecycle) ---------------------------------

    async def prepare(self, container: ContainerRecord) -> tuple[NetworkMode, str | None]:
        """Before the runtime creates the container: the network mode and, when the network
        driver makes the sandbox (Linux), its handle (the netns path runc joins).

        Sandboxed drivers (`NetworkDriver.sandboxed_drivers`) get a sandbox plugged into every
        network the container is connected to; the others share the host's stack and hold their
        addresses (address-only mode, ipnet on FreeBSD). Where the runtime makes the sandbox (a
        FreeBSD jail), plugging waits for `attach`. Published ports are allocated (409 `port is
        already allocated` when a running container has one) and get their rules. The caller
        holds the container's lock; if the start fails afterwards, it must `release()`.
        """
        if container.network_driver == "host":
            return NetworkMode.HOST, None
        if container.network_driver == "disabled":
            return NetworkMode.NONE, None
        address_only = container.network_driver not in self._host.sandboxed_drivers
        async with self._lock:
            await self._release(container.id)  # what a failed teardown may have left
            self._check_ports_free(container.id, container.public_ports)
            try:
                sandbox = None if address_only else await self._host.create_sandbox(container.id)
                self._live[container.id] = Live(sandbox, address_only=address_only)
                if sandbox is not None:
                    await self._join(container)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await self._release(container.id)
                if isinstance(exc, HostCommandError):
                    raise Internal(f"could not set up the container's network: {exc}") from None
                raise
        if address_only:
            return NetworkMode.ADDRESSES, None
        return NetworkMode.NAMESPACE, sandbox.handle if sandbox is not None else None

    async def attach(self, container: ContainerRecord, sandbox: Sandbox | None) -> None:
        """After the runtime created the container (`Runtime.create` returned `sandbox`): plug a
        sandbox the runtime made, or give an address-only container its addresses. Nothing to
        do when `prepare` already plugged the network driver's own sandbox. On failure the
        caller `release()`s, as for `prepare`."""
        live = self._live.get(container.id)
        if live is None or live.sandbox is not None:
            return
        if sandbox is None:
            raise Internal(f"the runtime made no network sandbox for container {container.id}")
        async with self._lock:
            live.sandbox = sandbox
            try:
                await self._join(container)
            except HostCommandError as exc:
                raise Internal(f"could not set up the container's network: {exc}") from None

    async def _join(self, container: ContainerRecord) -> None:
        """Connect the container's sandbox to each of its networks, then its ports' rules."""
        for endpoint in self._endpoints(container_id=container.id):
            await self._plug(container, endpoint, self.get(endpoint.network_id))
        if container.public_ports:
            await self._apply_firewall()

    async def adopt(self, container: ContainerRecord) -> None:
        """At start: a container a previous daemon started runs on (live restore). Take its
        namespace and plugs as they are (nothing is recreated), so `reconcile` keeps them and
        its published ports get their rules again; `release` removes them when it stops."""
        if container.network_driver not in self._host.sandboxed_drivers:
            return
        async with self._lock:
            sandbox = await self._host.existing_sandbox(container.id)
            if sandbox is None:
                raise Internal(f"the network sandbox of container {container.id} is gone")
            live = Live(sandbox)
            for endpoint in self._endpoints(container_id=container.id):
                network = self._store.get(NETWORK, endpoint.network_id, NetworkRecord)
                if network is not None:
                    spec = await self._plug_spec(container, live, endpoint, network)
                    live.plugs[endpoint.id] = Plug(network_id=network.id, host_end=self._host.host_end(spec),
                                                   spec=spec)
            self._live[container.id] = live

    async def release(self, container_id: str) -> None:
        """After the container stopped (or failed to start): remove its plugs, namespace and
        port rules. Idempotent."""
        async with self._lock:
            await self._release(container_id)

    async def _release(self, container_id: str) -> None:
        live = self._live.pop(container_id, None)
        if live is None:
            return
        for interface, address in [pair for pairs in live.addresses.values() for pair in pairs]:
            try:
                await self._host.remove_address(interface, address)
            except HostCommandError as exc:
                log.warning("could not remove address %s: %s", address, exc, extra={"container": container_id})
        for plug in live.plugs.values():
            try:
                await self._host.unplug(plug.host_end, plug.spec, sandbox=live.sandbox)
            except HostCommandError as exc:
                log.warning("could not remove plug %s: %s", plug.host_end, exc, extra={"container": container_id})
        try:
            await self._host.destroy_sandbox(container_id)
        finally:
            record = self._store.get(CONTAINER, container_id, ContainerRecord)
            if record is None or record.public_ports:
                await self._apply_firewall()

    def forget_container(self, container_id: str) -> None:
        """Delete the container's endpoints (freeing their addresses); part of the container
        removal's store transaction. The host side follows in `remove_container`."""
        endpoints = self._endpoints(container_id=container_id)
        for endpoint in endpoints:
            self._store.delete(ENDPOINT, endpoint.id)
        self._departed[container_id] = {e.network_id for e in endpoints}

    async def remove_container(self, container_id: str) -> None:
        """After a container's removal: its namespace (if any is left), hosts file, and the
        other containers' hosts files."""
        await self.release(container_id)
        with contextlib.suppress(FileNotFoundError):
            (self._hosts_dir / container_id).unlink()
        # Only the containers that shared a network with it list it in their hosts files.
        self._refresh_hosts(networks=self._departed.pop(container_id, None))

    def check_public_ports(self, driver: str, ports: Sequence[PublishedPort]) -> list[PublishedPort]:
        """At container create: upstream's checks and messages; `interfaces: []` becomes the host
        gateway interface (when one was detected)."""
        return ipam.check_ports(driver, ports, self._host_gateway)

    def check_ports_free(self, container_id: str, ports: Sequence[PublishedPort]) -> None:
        """409 `port is already allocated` when a running container publishes one of `ports`."""
        self._check_ports_free(container_id, ports)

    def _check_ports_free(self, container_id: str, ports: Sequence[PublishedPort]) -> None:
        if not ports:
            return
        taken = [(owner, p) for owner in self._live if owner != container_id
                 for p in self._ports_of(owner)]
        for port in ports:
            clash = ipam.port_overlap(port, [p for _, p in taken])
            if clash is not None:
                owner = next(o for o, p in taken if p is clash)
                raise Conflict(f"Bind for {port.host_port}/{port.protocol} failed: port is already allocated "
                               f"(by container {owner})")

    def _ports_of(self, container_id: str) -> list[PublishedPort]:
        record = self._store.get(CONTAINER, container_id, ContainerRecord)
        return list(record.public_ports) if record is not None else []

    def public_ports_of(self, container: ContainerRecord) -> list[PublishedPort]:
        """The container's published ports with the addresses they lead to (for inspect)."""
        return ipam.with_addresses(container.public_ports,
                                   *ipam.first_addresses(self._endpoints(container_id=container.id)))

    # --- /etc/hosts ----------------------------------------------------------------------------

    def hosts_file(self, container_id: str) -> Path | None:
        """The file to bind-mount at /etc/hosts (None for the host driver), kept current."""
        record = self._store.get(CONTAINER, container_id, ContainerRecord)
        if record is None or record.network_driver == "host":
            return None
        self._hosts_dir.mkdir(parents=True, exist_ok=True)
        path = self._hosts_dir / container_id
        names, endpoints = self._hosts_inputs()
        self._write_hosts(path, record, names, endpoints)
        return path

    def container_renamed(self, container_id: str) -> None:
        self._refresh_hosts()

    def _refresh_hosts(self, *, networks: Collection[str] | None = None) -> None:
        """Rewrite the hosts files: every one, or (`networks`) those of the containers on these
        networks: a container's file lists only the containers it shares a network with."""
        if not self._hosts_dir.is_dir() or (networks is not None and not networks):
            return
        names, endpoints = self._hosts_inputs()
        if networks is None:
            files = os.listdir(self._hosts_dir)
        else:
            files = sorted({e.container_id for e in endpoints if e.network_id in networks})
        for name in files:
            if (record := self._store.get(CONTAINER, name, ContainerRecord)) is not None \
                    and (self._hosts_dir / name).exists():
                self._write_hosts(self._hosts_dir / name, record, names, endpoints)

    def _hosts_inputs(self) -> tuple[dict[str, tuple[str, ...]], list[EndpointRecord]]:
        """The names of every connected container and every endpoint: read once per refresh,
        not once per file (a refresh rewrites every container's file)."""
        endpoints = self._endpoints()
        names = {}
        for container_id in {e.container_id for e in endpoints}:  # only connected containers are named
            if (record := self._store.get(CONTAINER, container_id, ContainerRecord)) is not None:
                names[container_id] = _host_names(record)
        return names, endpoints

    @staticmethod
    def _write_hosts(path: Path, container: ContainerRecord, names: dict[str, tuple[str, ...]],
                     endpoints: list[EndpointRecord]) -> None:
        # Rewritten in place, not renamed over: a bind mount keeps the inode it was made with.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(ipam.hosts_for(container.id, {**names, container.id: _host_names(container)}, endpoints))

    # --- host state ----------------------------------------------------------------------------

    async def _apply_firewall(self) -> None:
        """The whole table from the store: networks, and the published ports of the containers
        that run now (a port's rules exist only while its container runs)."""
        records = self._records()
        await self._host.enable_forwarding(ipv6=any(r.subnet6 for r in records))
        endpoints = self._endpoints()
        ports: list[PublishedPort] = []
        for container in self._store.all(CONTAINER, ContainerRecord, order="created ASC"):
            if container.public_ports and container.id in self._live:
                mine = [e for e in endpoints if e.container_id == container.id]
                ports += ipam.with_addresses(container.public_ports, *ipam.first_addresses(mine))
        plugs: dict[str, list[str]] = {}
        for live in self._live.values():
            for plug in live.plugs.values():
                plugs.setdefault(plug.network_id, []).append(plug.host_end)
        await self._firewall.apply([r.to_api() for r in records], ports, host_gateway=self._host_gateway, plugs=plugs)

    async def reapply(self) -> None:
        """Reload the nft table (e.g. on SIGHUP after the host's firewall was reloaded)."""
        async with self._lock:
            await self._apply_firewall()

    async def reconcile(self) -> None:
        """At start: recreate the interfaces and table the store needs; remove namespaces and
        links of ours that nothing owns; forget hosts files of removed containers.

        A failure is logged and the rest goes on: the daemon still serves what does work.
        """
        async with self._lock:
            try:
                self._host_gateway = await self._host.host_gateway()
                for container_id in set(await self._host.sandboxes()) - set(self._live):
                    await self._host.destroy_sandbox(container_id)
                wanted = {p.host_end for live in self._live.values() for p in live.plugs.values()}
                for record in self._records():
                    wanted.add(await self._restore(record))
                await self._drop_stale_addresses()
                for name in set(await self._host.owned_interfaces()) - wanted:
                    log.info("removing interface %s: no network owns it", name)
                    await self._host.destroy_interface(name)
                await self._apply_firewall()
            except HostCommandError as exc:
                log.error("could not restore the networks on the host: %s", exc)
        if self._hosts_dir.is_dir():
            for name in os.listdir(self._hosts_dir):
                if not self._store.exists(CONTAINER, name):
                    (self._hosts_dir / name).unlink()
        self._refresh_hosts()

    async def _drop_stale_addresses(self) -> None:
        """The addresses address-only containers that no longer run (a killed daemon) still
        hold on the networks' interfaces (`remove_address` checks first)."""
        for endpoint in self._endpoints():
            container = self._store.get(CONTAINER, endpoint.container_id, ContainerRecord)
            network = self._store.get(NETWORK, endpoint.network_id, NetworkRecord)
            if container is None or network is None or container.id in self._live \
                    or container.network_driver in self._host.sandboxed_drivers:
                continue
            for address in (endpoint.ip_address, endpoint.ip_address6):
                if address:
                    await self._host.remove_address(network.interface, address)

    async def _restore(self, record: NetworkRecord) -> str:
        """Make `record`'s interface as create left it; return its name."""
        kind = await self._host.interface_kind(record.interface)
        if record.type == "custom":
            if kind is None:
                log.warning("the interface of custom network %s is missing: %s", record.name, record.interface)
        elif kind is not None and not await self._host.is_owned(record.interface):
            log.error("interface %s of network %s exists but was not created by kleened; not using it",
                      record.interface, record.name)
        else:
            try:
                if kind is None:
                    await self._host.create_interface(record.interface, _kind(record))
                await self._configure(record)
            except HostCommandError as exc:
                log.error("could not restore interface %s of network %s: %s", record.interface, record.name, exc)
        return record.interface

    async def close(self) -> None:
        """At shutdown, after every container stopped: leave nothing of ours on the host
        (reconcile recreates it at the next start)."""
        async with self._lock:
            for container_id in list(self._live):
                await self._release(container_id)
            await self._firewall.remove()
            for name in await self._host.owned_interfaces():
                await self._host.destroy_interface(name)


def _kind(record: NetworkRecord) -> Literal["loopback", "bridge"]:
    return "bridge" if record.type == "bridge" else "loopback"


def _host_names(container: ContainerRecord) -> tuple[str, ...]:
    return (container.name, container.id) if container.name else (container.id,)
