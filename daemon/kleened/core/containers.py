"""Containers: create, list, inspect, update, stop, remove, prune, and starting one.

As upstream, a container *runs while its main process runs*: starting it is an exec with
`start_container`, and when that process exits the container is stopped and cleaned up (its
filesystem unmounted, its runtime state deleted). Names are unique (upstream allows
duplicates); an ambiguous ident is an error that names the candidates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import trio

from kleene_protocol.ids import new_id
from kleene_protocol.models import (
    ContainerConfig,
    ContainerInspect,
    ContainerSummary,
    ContainerUpdate,
    MountPoint,
    PublishedPort,
)

from ..platform.base import (
    BindMount,
    ContainerSpec,
    LayerStorage,
    Mount,
    NetworkMode,
    ProcessSpec,
    Runtime,
    VolumeStorage,
)
from ..platform.rootpath import PathEscape, ensure_target, read_text_in_root, resolve_in_root
from .clock import now_iso
from .environment import login_env, merge_env, validate_env
from .errors import Conflict, InvalidArgument, NotFound
from .events import Events
from .fanout import Fanout
from .imageconfig import remove_anonymous_volumes, stop_signal_of, with_image_volumes
from .logs import Logs
from .networks import Networks
from .records import CONTAINER, ContainerRecord, ImageRecord
from .resolve import resolve
from .store import Store
from .supervisor import Run, Supervisor
from .users import resolve_user
from .volumes import MOUNT, Volumes, mount_key

log = logging.getLogger(__name__)

NAME_RULE = "/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
_NAME = re.compile("^" + NAME_RULE)


def with_entrypoint(entrypoint: list[str] | None, cmd: list[str] | None) -> list[str] | None:
    """The command a container of an image with ENTRYPOINT runs: the entrypoint, then the
    container's (or the image's) command as its arguments, as docker does."""
    if not entrypoint:
        return cmd
    return [*entrypoint, *(cmd or [])]


class ImageResolver(Protocol):
    def resolve_ref(self, ref: str) -> tuple[ImageRecord, str]: ...
    def get(self, image_id: str) -> ImageRecord | None: ...


class Storage(LayerStorage, VolumeStorage, Protocol):
    async def populate_volume(self, name: str, source: Path) -> None: ...


class Containers:
    def __init__(
        self,
        store: Store,
        images: ImageResolver,
        volumes: Volumes,
        storage: Storage,
        runtime: Runtime,
        supervisor: Supervisor,
        networks: Networks,
        *,
        dataset_root: str,
        logs: Logs | None = None,
        events: Events | None = None,
    ) -> None:
        self._store = store
        self._images = images
        self._volumes = volumes
        self._storage = storage
        self._runtime = runtime
        self._supervisor = supervisor
        self._networks = networks
        self._dataset_root = dataset_root
        self._start_locks: dict[str, trio.Lock] = {}
        self.logs = logs if logs is not None else Logs(Path(dataset_root) / "logs")
        self._events = events if events is not None else Events()

    # --- lookups ----------------------------------------------------------------------------

    def get(self, ident: str, message: str = "container not found") -> ContainerRecord:
        container_id = resolve(self._store, CONTAINER, ident.lstrip("/") if ident.startswith("/") else ident)
        record = self._store.get(CONTAINER, container_id, ContainerRecord) if container_id else None
        if record is None:
            raise NotFound(message)
        return record

    def is_running(self, container_id: str) -> bool:
        return self._supervisor.is_running(container_id)

    def save(self, record: ContainerRecord) -> None:
        self._store.put(CONTAINER, record.id, record, name=record.name, created=record.created)

    # --- create -----------------------------------------------------------------------------

    async def create(self, config: ContainerConfig) -> ContainerRecord:
        name = config.name.lstrip("/") if config.name else None
        if config.name is not None and not _NAME.match(config.name):
            raise InvalidArgument(f"{config.name} does not match {NAME_RULE}")
        if name and (holders := self._store.ids_by_name(CONTAINER, name)):
            raise Conflict(f"container name '{name}' is already in use by {holders[0]}")
        if config.image is None:
            raise InvalidArgument("no image given")
        image, snapshot = self._images.resolve_ref(config.image)
        config = with_image_volumes(self._store, config, image)
        if error := validate_env(config.env or []):
            raise InvalidArgument(error)
        try:
            self._runtime.check_params(config.jail_param or [])
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        container_id = new_id()
        record = ContainerRecord(
            id=container_id,
            name=name,
            image_id=image.id,
            cmd=with_entrypoint(image.entrypoint, config.cmd if config.cmd else image.cmd),
            user=config.user or image.user,
            env=merge_env(image.env, config.env),
            jail_param=list(config.jail_param or []),
            network_driver=config.network_driver,
            public_ports=self._networks.check_public_ports(config.network_driver, [
                PublishedPort(interfaces=p.interfaces, host_port=p.host_port, container_port=p.container_port,
                              protocol=p.protocol)
                for p in config.public_ports or []
            ]),
            restart_policy=config.restart_policy,
            persist=bool(config.persist),
            created=now_iso(),
            dataset=f"{self._dataset_root}/containers/{container_id}",
            layers=image.layers_at(snapshot),
            workdir=image.workdir,
        )
        await self._storage.create_container_fs(container_id)
        try:
            record.mounts = await self._create_mounts(record, config)
            with self._store.transaction():
                self.save(record)
                for m in record.mounts:
                    self._store.put(MOUNT, mount_key(container_id, m.destination), m, name=m.source,
                                    created=record.created)
        except BaseException:
            await self._storage.remove_container_fs(container_id)
            raise
        log.info("container created", extra={"container": container_id, "image": image.id})
        self._events.publish("container", "create", container_id, name=name, image=image.id)
        return record

    async def _create_mounts(self, record: ContainerRecord, config: ContainerConfig) -> list[MountPoint]:
        mounts: list[MountPoint] = []
        prefill: list[tuple[str, str]] = []
        for m in config.mounts or []:
            if not m.destination.startswith("/"):
                raise InvalidArgument(f"mount destination '{m.destination}' must be an absolute path")
            if m.type == "volume":
                existed = self._store.exists("volume", m.source)
                await self._volumes.create(m.source)
                if not existed or not any(self._storage.volume_path(m.source).iterdir()):
                    prefill.append((m.source, m.destination))
            elif not Path(m.source).is_absolute() or not Path(m.source).exists():
                raise InvalidArgument(f"could not mount '{m.source}': no such file or directory on the host")
            mounts.append(MountPoint(type=m.type, container_id=record.id, destination=m.destination,
                                     source=m.source, read_only=m.read_only))
        if prefill:
            await self._prefill_volumes(record, prefill)
        return mounts

    async def _prefill_volumes(self, record: ContainerRecord, prefill: list[tuple[str, str]]) -> None:
        """A new (or empty) volume takes the content of the image directory it is mounted on, and its owner and
        mode even when it is empty (Docker's copy-up: `chmod 1777 $PGDATA` + `VOLUME $PGDATA` must hold)."""
        rootfs = await self._storage.mount_container_fs(record.id, record.layers)
        try:
            for volume, destination in prefill:
                source = resolve_in_root(rootfs, destination)
                if source.is_dir():
                    await self._storage.populate_volume(volume, source)
        finally:
            await self._storage.unmount_container_fs(record.id)

    # --- queries ----------------------------------------------------------------------------

    def list(self, *, all_: bool) -> list[ContainerSummary]:
        result = []
        for record in self._store.all(CONTAINER, ContainerRecord):
            running = self.is_running(record.id)
            if not all_ and not running:
                continue
            image = self._images.get(record.image_id)
            api = record.to_api(running=running)
            result.append(ContainerSummary(
                **{f: getattr(api, f) for f in api.__struct_fields__},
                image_name=image.name if image else "", image_tag=image.tag if image else "",
                jid=self._init_pid(record.id),
            ))
        return result

    def _init_pid(self, container_id: str) -> int | None:
        runs = [r for r in self._supervisor.runs_in(container_id) if r.is_init]
        return runs[0].process.pid if runs else None

    def inspect(self, ident: str) -> ContainerInspect:
        record = self.get(ident)
        api = record.to_api(running=self.is_running(record.id))
        api.public_ports = self._networks.public_ports_of(record)
        return ContainerInspect(
            container=api,
            container_endpoints=self._networks.endpoints_of(record.id),
            container_mountpoints=record.mounts,
        )

    # --- changes ----------------------------------------------------------------------------

    async def update(self, ident: str, update: ContainerUpdate) -> ContainerRecord:
        record = self.get(ident, f"no such container '{ident}'")
        if update.name is not None and update.name.lstrip("/") != record.name:
            new_name = update.name.lstrip("/")
            if not _NAME.match(update.name):
                raise Conflict(
                    f"an error ocurred while updating the container: {update.name} does not match {NAME_RULE}"
                )
            if self._store.ids_by_name(CONTAINER, new_name):
                raise Conflict(f"an error ocurred while updating the container: name '{new_name}' is already in use")
            old_name, record.name = record.name, new_name
            self.save(record)
            self._networks.container_renamed(record.id)
            self._events.publish("container", "rename", record.id, name=new_name, old_name=old_name)
        if update.jail_param is not None:
            try:
                self._runtime.check_params(update.jail_param)
            except ValueError as exc:
                raise Conflict(f"an error ocurred while updating the container: {exc}") from None
            record.jail_param = update.jail_param
        if update.env is not None:
            if error := validate_env(update.env):
                raise Conflict(f"an error ocurred while updating the container: {error}")
            record.env = update.env
        for field in ("user", "cmd", "persist", "restart_policy"):
            value = getattr(update, field)
            if value is not None:
                setattr(record, field, value)
        self.save(record)
        return record

    async def stop(self, ident: str) -> str:
        record = self.get(ident)
        if not self.is_running(record.id):
            raise NotFound("container not running")
        await self._supervisor.stop_container(record.id)
        self._events.publish("container", "stop", record.id, name=record.name)
        return record.id

    async def remove(self, ident: str, *, volumes: bool = False) -> str:
        """Remove a stopped container; `volumes` also removes the anonymous volumes its image's VOLUMEs made."""
        record = self.get(ident, "no such container")
        if self.is_running(record.id):
            raise Conflict("you cannot remove a running container")
        await self._destroy(record)
        if volumes:
            await remove_anonymous_volumes(self._store, self._volumes, record.mounts)
        return record.id

    async def _destroy(self, record: ContainerRecord) -> None:
        with self._store.transaction():
            for m in record.mounts:
                self._store.delete(MOUNT, mount_key(record.id, m.destination))
            self._store.delete(CONTAINER, record.id)
        await self._networks.remove_container(record.id)
        await self._runtime.delete(record.id)
        await self._storage.remove_container_fs(record.id)
        self.logs.remove(record.id)
        log.info("container removed", extra={"container": record.id})
        self._events.publish("container", "remove", record.id, name=record.name)

    async def prune(self) -> list[str]:
        removed = []
        for record in self._store.all(CONTAINER, ContainerRecord):
            if not record.persist and not self.is_running(record.id):
                await self._destroy(record)
                removed.append(record.id)
        return removed

    def images_in_use(self) -> dict[str, list[str]]:
        """image id -> ids of the containers created from it."""
        used: dict[str, list[str]] = {}
        for record in self._store.all(CONTAINER, ContainerRecord):
            used.setdefault(record.image_id, []).append(record.id)
        return used

    # --- running ----------------------------------------------------------------------------

    async def start(
        self, record: ContainerRecord, *, exec_id: str, cmd: list[str], user: str, env: list[str], tty: bool,
        fanout: Fanout, extra_mounts: Sequence[Mount] = (), network: NetworkMode | None = None,
    ) -> Run:
        """Start the container with `cmd` as its main process (the init runs it). `extra_mounts` and `network`
        are for one run only (a build's `RUN --mount` and `RUN --network`); their targets must exist."""
        argv = cmd or record.cmd or []
        if not argv:
            raise InvalidArgument("no command given and the container has none")
        lock = self._start_locks.setdefault(record.id, trio.Lock())
        async with lock:  # two starts of one stopped container must not mount it twice
            if self.is_running(record.id):
                raise Conflict("container is already running")
            return await self._start_locked(record, exec_id, argv, user, env, tty, fanout, extra_mounts, network)

    async def _start_locked(self, record: ContainerRecord, exec_id: str, argv: list[str], user: str,
                            env: list[str], tty: bool, fanout: Fanout, extra_mounts: Sequence[Mount] = (),
                            network: NetworkMode | None = None) -> Run:
        await self._ensure_volumes(record)
        rootfs = await self._storage.mount_container_fs(record.id, record.layers)
        container_log = None
        try:
            process = self._process_spec(rootfs, record, argv, user or self._default_user(record), env, tty)
            mounts = self._bind_mounts(rootfs, record)
            hosts = self._networks.hosts_file(record.id)
            if hosts is not None:
                ensure_target(rootfs, "/etc/hosts", directory=False)
                mounts.append(BindMount(source=hosts, destination="/etc/hosts", read_only=True))
            mounts += extra_mounts
            mode, netns_path = (network, None) if network else await self._networks.prepare(record)
            spec = ContainerSpec(
                id=record.id,
                rootfs=rootfs,
                hostname=record.name or record.id,
                process=process,
                mounts=mounts,
                network=mode,
                netns_path=netns_path,
                params=self._runtime.check_params(record.jail_param),
                stop_signal=stop_signal_of(self._images.get(record.image_id)),
            )
            container_log = self.logs.open(record.id)
            run = await self._supervisor.start_container(spec, exec_id, self._after_exit, fanout=fanout,
                                                         log=container_log)
        except BaseException:
            if container_log is not None:
                container_log.abandon()
            await self._runtime.delete(record.id)
            await self._networks.release(record.id)
            await self._storage.unmount_container_fs(record.id)
            raise
        record.started_at, record.finished_at, record.exit_code = now_iso(), None, None
        self.save(record)
        log.info("container started", extra={"container": record.id, "exec": exec_id})
        self._events.publish("container", "start", record.id, name=record.name)
        return run

    def process_spec_in(self, record: ContainerRecord, cmd: list[str], user: str, env: list[str],
                        tty: bool) -> ProcessSpec:
        """The spec of an exec in the running container `record`."""
        rootfs = self._storage.rootfs_path(record.id)
        return self._process_spec(rootfs, record, cmd or record.cmd or [], user or self._default_user(record), env,
                                  tty)

    def _default_user(self, record: ContainerRecord) -> str:
        """The container's user; the jail parameter `exec.jail_user` wins, as upstream."""
        return self._runtime.check_params(record.jail_param).get("exec.jail_user") or record.user

    def _process_spec(self, rootfs: Path, record: ContainerRecord, argv: list[str], user_spec: str,
                      env: list[str], tty: bool) -> ProcessSpec:
        try:
            user = resolve_user(user_spec, read_text_in_root(rootfs, "/etc/passwd"),
                                read_text_in_root(rootfs, "/etc/group"))
        except PathEscape as exc:
            raise InvalidArgument(str(exc)) from None
        cwd = record.workdir if record.workdir not in ("", "/") else user.home
        try:
            if not resolve_in_root(rootfs, cwd).is_dir():
                cwd = "/"
        except PathEscape:
            cwd = "/"
        base = login_env(user=user.name, home=user.home, cwd=cwd, tty=tty)
        return ProcessSpec(args=list(argv), env=merge_env(base, record.env, env), cwd=cwd, uid=user.uid,
                           gid=user.gid, additional_gids=list(user.groups), tty=tty)

    async def _ensure_volumes(self, record: ContainerRecord) -> None:
        """A volume removed since the container was created is created again, as on first use."""
        for m in record.mounts:
            if m.type == "volume" and not self._store.exists("volume", m.source):
                await self._volumes.create(m.source)
                self._store.put(MOUNT, mount_key(record.id, m.destination), m, name=m.source, created=now_iso())

    def _bind_mounts(self, rootfs: Path, record: ContainerRecord) -> list[BindMount]:
        binds = []
        for m in record.mounts:
            source = self._storage.volume_path(m.source) if m.type == "volume" else Path(m.source)
            if not source.exists():
                raise InvalidArgument(f"could not mount '{m.source}': it no longer exists")
            try:
                ensure_target(rootfs, m.destination, directory=source.is_dir())
            except PathEscape as exc:
                raise InvalidArgument(f"could not mount '{m.source}' on '{m.destination}': {exc}") from None
            binds.append(BindMount(source=source, destination=m.destination, read_only=m.read_only))
        return binds

    async def _after_exit(self, run: Run) -> None:
        if not run.is_init:
            return
        try:
            await self._runtime.delete(run.container_id)
        finally:
            try:
                await self._networks.release(run.container_id)
            finally:
                await self._storage.unmount_container_fs(run.container_id)
        record = self._store.get(CONTAINER, run.container_id, ContainerRecord)
        if record is not None:
            record.exit_code, record.finished_at = run.exit_code, now_iso()
            self.save(record)
        self._events.publish("container", "die", run.container_id, name=record.name if record else None,
                             exit_code=run.exit_code)

    # --- start-up -----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """After a crash: forget runtime containers and mounts no live process backs."""
        stale = await self._runtime.list_containers()
        for container_id in stale:
            log.warning("removing a container left by a previous daemon", extra={"container": container_id})
            await self._runtime.kill(container_id, 9, all_processes=True)
            await self._runtime.delete(container_id)
        for container_id in self._storage.mounted_container_fs():
            await self._storage.unmount_container_fs(container_id)
        for record in self._store.all(CONTAINER, ContainerRecord):
            if record.name == f"builder_{record.id}":
                log.warning("removing the container of a build a previous daemon left", extra={"container": record.id})
                await self._destroy(record)
                continue
            if record.started_at and not record.finished_at:
                record.finished_at = now_iso()
                self.save(record)
        self.logs.reconcile({record.id for record in self._store.all(CONTAINER, ContainerRecord)})

    def on_startup(self) -> list[ContainerRecord]:
        return [r for r in self._store.all(CONTAINER, ContainerRecord) if r.restart_policy == "on-startup"]
