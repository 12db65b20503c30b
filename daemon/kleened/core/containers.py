"""Containers: create, list, inspect, update, remove, prune, and the lifecycle of a run.

As upstream, a container *runs while its main process runs*: starting it is an exec with
`start_container`, and when that process exits the container is stopped and cleaned up (its
filesystem unmounted, its network namespace and runtime state removed). Names are unique
(upstream allows duplicates): the store refuses a second holder, so two racing creates cannot
both win. An ambiguous ident is an error that names the candidates.

Every change holds the container's lock (`lifecycle.Locks`) across its awaits and checks the
container's state (`lifecycle.ContainerStates`) under it: a start, an exec launch, a removal, an
update and the teardown after an exit never interleave on one container. Images and volumes a
create uses are locked too, so they cannot be removed while it runs. Host side effects of a start
are all named after the container id, and `_teardown` undoes every one of them, idempotently and
shielded, whether the start failed, was cancelled by a vanished client, or the container exited.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

import trio

from kleene_protocol.ids import new_id
from kleene_protocol.models import (
    Container,
    ContainerConfig,
    ContainerInspect,
    ContainerSummary,
    ContainerUpdate,
    MountPoint,
    PublishedPort,
)
from kleene_protocol.names import name_error

from .. import faults
from ..platform.base import (
    BindMount,
    Capability,
    ContainerSpec,
    FoundContainer,
    HostCommandError,
    LayerStorage,
    Mount,
    NetworkMode,
    Runtime,
    VolumeStorage,
)
from ..platform.posix.rootpath import PathEscape, ensure_target, resolve_in_root
from .clock import iso_of, now_iso
from .container_spec import bind_mounts, check_destination, process_spec, with_entrypoint
from .environment import merge_env, validate_env
from .errors import Conflict, ExecFailed, Internal, InvalidArgument, KleeneError, NotFound
from .events import Events
from .fanout import Fanout
from .health import ExecProbe, Healthchecks, HealthStatus, effective, probe_argv
from .imageconfig import remove_anonymous_volumes, stop_signal_of, with_image_volumes
from .isolation import Isolation
from .lifecycle import ContainerStates, Locks, State
from .logs import ContainerLog, Logs
from .networks import Networks
from .records import CONTAINER, ContainerRecord, ImageRecord
from .resolve import resolve
from .restarts import UPSTREAM, Pending, Restarts, checked_policy, policy_of, ran_for
from .store import NameTaken, Store
from .supervisor import OnExit, Run, Supervisor
from .volumes import MOUNT, Volumes, mount_key

log = logging.getLogger(__name__)

# Upstream's rule and message for container names; ours (kleene_protocol.names) accepts every
# name upstream's does, plus one-character names, up to 128 characters.
UPSTREAM_NAME_RULE = "/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
# A build's containers (`builder_<id>`, and `builder_<id>_stage<n>` for earlier stages): only a
# build that a crash interrupted leaves them, and start-up removes them.
_BUILD_CONTAINER = re.compile(r"builder_[0-9a-f]{12}(_stage[0-9]+)?")
HOSTNAME_MAX = 63  # sethostname(2) takes 64 bytes; a longer container name gives a shortened hostname
TEARDOWN_DEADLINE = 60.0  # seconds to undo a start (runc delete waits up to 10 s for a killed init)
NOT_RUNNING = "container is not running"
__all__ = ["Containers", "with_entrypoint"]


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
        locks: Locks | None = None,
        isolation: Isolation | None = None,
        restarts: Restarts | None = None,
    ) -> None:
        self._store = store
        self._images = images
        self._volumes = volumes
        self._storage = storage
        self._runtime = runtime
        self._supervisor = supervisor
        self._networks = networks
        self.locks = locks if locks is not None else Locks()
        self.states = ContainerStates()
        self._creating: set[str] = set()  # names of containers being created (not yet stored)
        # Called with the id of every removed container (e.g. its exec instances are forgotten).
        self.removal_hooks: list[Callable[[str], None]] = []
        self.logs = logs if logs is not None else Logs(Path(dataset_root) / "logs")
        self._events = events if events is not None else Events()
        self._isolation = isolation if isolation is not None else Isolation(runtime)
        self.restarts = restarts if restarts is not None else Restarts()
        self.health = Healthchecks(ExecProbe(self.run_process, supervisor.stop_exec), self._publish_health)
        # The process arguments (cmd, user, env, tty) of each container's last start: an automatic restart reuses them.
        self._last_start: dict[str, tuple[list[str], str, list[str], bool]] = {}
        # Containers that ended while no daemon ran and whose policy restarts them (start-up).
        self._restart_at_startup: set[str] = set()

    # --- lookups ----------------------------------------------------------------------------

    def get(self, ident: str, message: str = "container not found") -> ContainerRecord:
        container_id = resolve(self._store, CONTAINER, ident.lstrip("/") if ident.startswith("/") else ident)
        record = self._store.get(CONTAINER, container_id, ContainerRecord) if container_id else None
        if record is None:
            raise NotFound(message)
        return record

    def _reload(self, container_id: str, message: str = "container not found") -> ContainerRecord:
        """The stored record, read again under the container's lock (it may have gone meanwhile)."""
        record = self._store.get(CONTAINER, container_id, ContainerRecord)
        if record is None:
            raise NotFound(message)
        return record

    def is_running(self, container_id: str) -> bool:
        return self._supervisor.is_running(container_id)

    def state(self, record: ContainerRecord) -> State:
        return self.states.get(record.id, ever_started=bool(record.started_at))

    def _move(self, record: ContainerRecord, new: State) -> State:
        return self.states.move(record.id, new, ever_started=bool(record.started_at))

    def _lock(self, container_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.locks.hold(("container", container_id))

    def _save(self, record: ContainerRecord) -> None:
        """Write `record` (its name must be free: `NameTaken` otherwise). Call under its lock."""
        self._store.put(CONTAINER, record.id, record, name=record.name, created=record.created)

    # --- create -----------------------------------------------------------------------------

    async def create(self, config: ContainerConfig) -> ContainerRecord:
        name = self._check_create(config)
        assert config.image is not None
        image, snapshot = self._images.resolve_ref(config.image)
        config = with_image_volumes(self._store, config, image)
        volumes = sorted({m.source for m in config.mounts or [] if m.type == "volume"})
        async with self.locks.hold(("image", image.id), *(("volume", v) for v in volumes)):
            if self._images.get(image.id) is None:
                raise NotFound(f"no such image '{config.image}'")
            if name is not None:
                self._reserve_name(name)
            try:
                return await self._create_locked(config, name, image, snapshot)
            finally:
                self._creating.discard(name or "")

    def _check_create(self, config: ContainerConfig) -> str | None:
        """Everything about the request that needs no host: the name, image, env, params, mounts."""
        name = config.name.removeprefix("/") if config.name is not None else None
        if name is not None and name_error("container", name):
            raise InvalidArgument(f"{config.name} does not match {UPSTREAM_NAME_RULE}"
                                  if len(name) <= 128 else "container name is longer than 128 characters")
        if config.image is None:
            raise InvalidArgument("no image given")
        if error := validate_env(config.env or []):
            raise InvalidArgument(error)
        try:
            self._runtime.check_params(config.jail_param or [])
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        destinations = [check_destination(m.destination) for m in config.mounts or []]
        if len(set(destinations)) < len(destinations):
            raise InvalidArgument("two mounts have the same destination")
        for m in config.mounts or []:
            if m.type == "volume" and (error := name_error("volume", m.source)):
                raise InvalidArgument(error)
            if m.type == "nullfs" and (not Path(m.source).is_absolute() or not Path(m.source).exists()):
                raise InvalidArgument(f"could not mount '{m.source}': no such file or directory on the host")
        return name

    def _reserve_name(self, name: str) -> None:
        if name in self._creating or (holders := self._store.ids_by_name(CONTAINER, name)):
            holder = holders[0] if name not in self._creating else "a container being created"
            raise Conflict(f"container name '{name}' is already in use by {holder}")
        self._creating.add(name)

    async def _create_locked(self, config: ContainerConfig, name: str | None, image: ImageRecord,
                             snapshot: str) -> ContainerRecord:
        container_id = new_id()
        ports = self._networks.check_public_ports(config.network_driver, [
            PublishedPort(interfaces=p.interfaces, host_port=p.host_port, container_port=p.container_port,
                          protocol=p.protocol)
            for p in config.public_ports or []
        ])
        self._networks.check_ports_free(container_id, ports)
        resources, seccomp, userns = self._isolation.check_create(config)
        policy = checked_policy(config.restart_policy, InvalidArgument)
        healthcheck = effective(image.healthcheck, config.healthcheck)
        record = ContainerRecord(
            id=container_id, name=name, image_id=image.id,
            cmd=with_entrypoint(image.entrypoint, config.cmd if config.cmd else image.cmd),
            user=config.user or image.user, env=merge_env(image.env, config.env),
            jail_param=list(config.jail_param or []), network_driver=config.network_driver, public_ports=ports,
            restart_policy=policy.upstream, restart=str(policy), persist=bool(config.persist), created=now_iso(),
            dataset=self._storage.container_dataset(container_id), layers=image.layers_at(snapshot),
            workdir=image.workdir, resources=resources, seccomp=seccomp, userns=userns, healthcheck=healthcheck,
        )
        await self._storage.create_container_fs(container_id, record.layers)
        try:
            faults.point("container.create.fs")
            record.mounts = await self._create_mounts(record, config)
            faults.point("container.create.mounts")
            with self._store.transaction():
                self._save(record)
                for m in record.mounts:
                    self._store.put(MOUNT, mount_key(container_id, m.destination), m, name=m.source,
                                    created=record.created)
        except BaseException as exc:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_DEADLINE):
                await self._storage.remove_container_fs(container_id)
            if isinstance(exc, NameTaken):
                raise Conflict(f"container name '{name}' is already in use") from None
            raise
        log.info("container created", extra={"container": container_id, "image": image.id})
        self._events.publish("container", "create", container_id, name=name, image=image.id)
        return record

    async def _create_mounts(self, record: ContainerRecord, config: ContainerConfig) -> list[MountPoint]:
        """Mount records; volumes are created (caller holds their locks) and prefilled when new or empty."""
        mounts: list[MountPoint] = []
        prefill: list[tuple[str, str]] = []
        for m in config.mounts or []:
            destination = check_destination(m.destination)
            if m.type == "volume":
                existed = self._store.exists("volume", m.source)
                await self._volumes.create_held(m.source)
                if not existed or not any(self._storage.volume_path(m.source).iterdir()):
                    prefill.append((m.source, destination))
            mounts.append(MountPoint(type=m.type, container_id=record.id, destination=destination,
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
                try:
                    source = resolve_in_root(rootfs, destination)
                except PathEscape as exc:
                    raise InvalidArgument(f"could not mount '{volume}' on '{destination}': {exc}") from None
                if source.is_dir() and not source.is_symlink():
                    await self._storage.populate_volume(volume, source)
        finally:
            with trio.CancelScope(shield=True):
                await self._storage.unmount_container_fs(record.id)

    # --- queries ----------------------------------------------------------------------------

    def list(self, *, all_: bool) -> list[ContainerSummary]:
        result = []
        images: dict[str, ImageRecord | None] = {}  # one lookup per image, not per container
        for record in self._store.all(CONTAINER, ContainerRecord):
            running = self.is_running(record.id)
            if not all_ and not running:
                continue
            if record.image_id not in images:
                images[record.image_id] = self._images.get(record.image_id)
            image = images[record.image_id]
            api = self._to_api(record, running)
            result.append(ContainerSummary(
                **{f: getattr(api, f) for f in api.__struct_fields__},
                image_name=image.name if image else "", image_tag=image.tag if image else "",
                jid=self._init_pid(record.id),
            ))
        return result

    def _init_pid(self, container_id: str) -> int | None:
        run = self._supervisor.init_run(container_id)
        return run.process.pid if run is not None else None

    def inspect(self, ident: str) -> ContainerInspect:
        record = self.get(ident)
        api = self._to_api(record, self.is_running(record.id))
        api.public_ports = self._networks.public_ports_of(record)
        api.resources = self._isolation.effective(record)
        return ContainerInspect(
            container=api,
            container_endpoints=self._networks.endpoints_of(record.id),
            container_mountpoints=record.mounts,
        )

    def _to_api(self, record: ContainerRecord, running: bool) -> Container:
        """The wire object, with what only memory knows: a pending restart, the health so far."""
        api = record.to_api(running=running)
        api.restart = api.restart or api.restart_policy or "no"
        api.restarting = self.restarts.is_pending(record.id)
        api.health = self.health.get(record.id)
        return api

    def images_in_use(self) -> dict[str, list[str]]:
        """image id -> ids of the containers created from it."""
        used: dict[str, list[str]] = {}
        for record in self._store.all(CONTAINER, ContainerRecord):
            used.setdefault(record.image_id, []).append(record.id)
        return used

    # --- changes ----------------------------------------------------------------------------

    async def update(self, ident: str, update: ContainerUpdate) -> ContainerRecord:
        """Change what the next start uses (and the name at once). Upstream's 409 messages."""
        container_id = self.get(ident, f"no such container '{ident}'").id
        async with self._lock(container_id):
            record = self._reload(container_id, f"no such container '{ident}'")
            if self.state(record) is State.REMOVING:
                raise NotFound(f"no such container '{ident}'")
            return await self._update_locked(record, update)

    async def _update_locked(self, record: ContainerRecord, update: ContainerUpdate) -> ContainerRecord:
        old_name = record.name
        if update.name is not None and update.name.removeprefix("/") != record.name:
            new_name = update.name.removeprefix("/")
            if name_error("container", new_name):
                raise Conflict(
                    f"an error ocurred while updating the container: {update.name} does not match {UPSTREAM_NAME_RULE}"
                )
            if new_name in self._creating or self._store.ids_by_name(CONTAINER, new_name):
                raise Conflict(f"an error ocurred while updating the container: name '{new_name}' is already in use")
            record.name = new_name
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
        if update.restart_policy is not None:
            policy = checked_policy(update.restart_policy, Conflict, "an error ocurred while updating the container: ")
            record.restart_policy, record.restart = policy.upstream, str(policy)
            if policy.name in UPSTREAM:  # a policy that never restarts ends a pending restart
                self.restarts.cancel(record.id)
        for field in ("user", "cmd", "persist"):
            value = getattr(update, field)
            if value is not None:
                setattr(record, field, value)
        await self._isolation.update(record, update, running=self.state(record) is State.RUNNING)
        try:
            self._save(record)
        except NameTaken:
            raise Conflict(f"an error ocurred while updating the container: name '{record.name}' is already in use"
                           ) from None
        if record.name != old_name:
            self._networks.container_renamed(record.id)
            self._events.publish("container", "rename", record.id, name=record.name, old_name=old_name)
        return record

    async def stop(self, ident: str, *, grace: float | None = None) -> str:
        """Stop a running container: its stop signal, the grace period, then KILL.

        A container that is already stopping is waited for. Returns once it is stopped and its
        host state is gone.
        """
        record = self.get(ident)
        await self._stop(record.id, refuse=NotFound("container not running"), grace=grace, by_user=True)
        self._events.publish("container", "stop", record.id, name=record.name)
        return record.id

    async def _stop(self, container_id: str, *, refuse: KleeneError | None, grace: float | None = None,
                    by_user: bool = False) -> None:
        """The signal goes out under the lock (so it reaches this run, never a later one); the
        wait does not hold it, since the teardown that ends the run takes the lock. A user's stop
        also ends restarting: a pending restart is cancelled (and the stop succeeds), and
        `unless-stopped` keeps the container stopped at the next daemon start."""
        async with self._lock(container_id):
            record = self._reload(container_id)
            state = self.state(record)
            # The main process of this run, also when it has just exited and its teardown waits for
            # the lock: the stop then only waits for it, and the exit counts as the stop's (no restart).
            run = self._supervisor.init_run(container_id) or next(
                (r for r in self._supervisor.runs_in(container_id) if r.is_init), None)
            cancelled = self.restarts.cancel(container_id)
            if by_user and (cancelled or (state is State.RUNNING and run is not None)):
                record.stopped_by_user = True
                self._save(record)
            if cancelled and state is not State.RUNNING:
                return
            if state is State.RUNNING and run is not None:
                self._move(record, State.STOPPING)
                if not run.exited.is_set():
                    await self._supervisor.signal_container(container_id, run.stop_signal)
                faults.point("container.stop.signalled")
            elif state is not State.STOPPING:
                if refuse is not None:
                    raise refuse
                return
        if run is not None and not await self._supervisor.finish_stop(run, grace=grace):
            raise Internal(f"container {container_id} did not stop: its processes survived SIGKILL")

    async def stop_all(self) -> None:
        """Stop every running container (daemon shutdown), concurrently. Restarts end first: none
        is scheduled any more, and a restart already starting is waited for (it holds the lock)."""
        for container_id in self.restarts.close():
            async with self._lock(container_id):
                pass
        async with trio.open_nursery() as nursery:
            for container_id in self._supervisor.running_containers():
                nursery.start_soon(self._stop_quietly, container_id)

    async def _stop_quietly(self, container_id: str) -> None:
        try:
            await self._stop(container_id, refuse=None)
        except Exception:
            log.exception("could not stop container", extra={"container": container_id})

    async def remove(self, ident: str, *, volumes: bool = False) -> str:
        """Remove a stopped container; `volumes` also removes the anonymous volumes its image's VOLUMEs made."""
        container_id = self.get(ident, "no such container").id
        async with self._lock(container_id):
            record = self._reload(container_id, "no such container")
            self.states.require(record.id, {State.CREATED, State.STOPPED}, ever_started=bool(record.started_at),
                                refusal={s: "you cannot remove a running container"
                                         for s in (State.STARTING, State.RUNNING, State.STOPPING)})
            await self._destroy(record)
        if volumes:
            await remove_anonymous_volumes(self._store, self._volumes, record.mounts)
        return record.id

    async def _destroy(self, record: ContainerRecord) -> None:
        """Forget the container (one store write), then remove its host state. Call under its lock.

        The records go first: a crash after that leaves only host state no record owns, which
        start-up removes; never a listed container without a filesystem.
        """
        self._move(record, State.REMOVING)
        self.restarts.reset(record.id)
        self._last_start.pop(record.id, None)
        self.health.forget(record.id)
        with self._store.transaction():
            for m in record.mounts:
                self._store.delete(MOUNT, mount_key(record.id, m.destination))
            self._store.delete(CONTAINER, record.id)
            self._networks.forget_container(record.id)
        self.states.forget(record.id)
        for hook in self.removal_hooks:
            hook(record.id)
        faults.point("container.remove.forgotten")
        with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_DEADLINE):
            try:
                await self._networks.remove_container(record.id)
                await self._runtime.delete(record.id)
                await self._storage.remove_container_fs(record.id)
            except (OSError, HostCommandError) as exc:
                log.warning("container removed, but its host state stays until the next start: %s", exc,
                            extra={"container": record.id})
                raise Internal(f"container removed, but cleaning its files failed (retried at the next start): "
                               f"{exc}") from None
            finally:
                self.logs.remove(record.id)
        log.info("container removed", extra={"container": record.id})
        self._events.publish("container", "remove", record.id, name=record.name)

    async def prune(self) -> list[str]:
        """Remove every stopped container without `persist`, oldest first (upstream's order). A
        container waiting out a restart's back-off is not stopped: it stays."""
        removed = []
        for record in self._store.all(CONTAINER, ContainerRecord, order="created ASC"):
            if record.persist:
                continue
            async with self._lock(record.id):
                current = self._store.get(CONTAINER, record.id, ContainerRecord)
                if current is None or self.state(current) not in (State.CREATED, State.STOPPED) \
                        or self.restarts.is_pending(record.id):
                    continue
                await self._destroy(current)
            removed.append(record.id)
        return removed

    # --- running ----------------------------------------------------------------------------

    async def run_process(self, container_id: str, *, exec_id: str, cmd: list[str], user: str, env: list[str],
                          tty: bool, fanout: Fanout, start_container: bool, on_exec_exit: OnExit) -> Run:
        """Run a process in the container: an exec when it runs (`on_exec_exit` runs after it),
        else (with `start_container`) start the container with the process as its main one.
        Decided under the lock."""
        async with self._lock(container_id):
            record = self._reload(container_id)
            state = self.state(record)
            if state is State.RUNNING and self.is_running(record.id):
                return await self._exec_locked(record, exec_id, cmd, user, env, tty, fanout, on_exec_exit)
            if state in (State.CREATED, State.STOPPED):
                if not start_container:
                    raise Conflict("cannot start container when 'start_container' is false.")
                return await self._start_locked(record, exec_id, cmd, user, env, tty, fanout)
            raise Conflict(NOT_RUNNING if state is State.STOPPING else f"container is {state.value}")

    async def start(self, record: ContainerRecord, *, exec_id: str, cmd: list[str], user: str, env: list[str],
                    tty: bool, fanout: Fanout, extra_mounts: Sequence[Mount] = (),
                    network: NetworkMode | None = None) -> Run:
        """Start the stopped container `record` with `cmd` as its main process. `extra_mounts` and `network`
        are for this run only (a build's `RUN --mount` and `RUN --network`); their targets must exist."""
        async with self._lock(record.id):
            record = self._reload(record.id)
            self.states.require(record.id, {State.CREATED, State.STOPPED}, ever_started=bool(record.started_at),
                                refusal={State.RUNNING: "container is already running"})
            return await self._start_locked(record, exec_id, cmd, user, env, tty, fanout, extra_mounts, network,
                                            policies=False)

    async def _exec_locked(self, record: ContainerRecord, exec_id: str, cmd: list[str], user: str, env: list[str],
                           tty: bool, fanout: Fanout, on_exit: OnExit) -> Run:
        spec = process_spec(self._storage.rootfs_path(record.id), record, cmd or record.cmd or [],
                            user or self._default_user(record), env, tty)
        try:
            return await self._supervisor.exec(record.id, spec, exec_id, on_exit, fanout=fanout)
        except HostCommandError as exc:
            raise _launch_error(exc) from None

    async def _start_locked(self, record: ContainerRecord, exec_id: str, cmd: list[str], user: str,
                            env: list[str], tty: bool, fanout: Fanout, extra_mounts: Sequence[Mount] = (),
                            network: NetworkMode | None = None, *, automatic: bool = False,
                            policies: bool = True) -> Run:
        """Start under the lock. A start that is not an automatic restart (`automatic`) is a
        user's: it ends a pending restart and starts the back-off and restart count afresh. The
        container's healthcheck and restart policy apply to this run unless `policies` is false
        (a build step's run)."""
        argv = cmd or record.cmd or []
        if not argv:
            raise InvalidArgument("no command given and the container has none")
        if not automatic:
            self.restarts.reset(record.id)
            record.restart_count, record.stopped_by_user = 0, False
        previous = self._move(record, State.STARTING)
        container_log = None
        try:
            await self._runtime.delete(record.id)  # a runtime state a failed teardown left behind
            faults.point("container.start.begin")
            isolation = self._isolation.spec_fields(record)  # limits, seccomp, userns
            rootfs = await self._storage.mount_container_fs(record.id, record.layers, isolation["userns"])
            faults.point("container.start.mounted")
            process = process_spec(rootfs, record, argv, user or self._default_user(record), env, tty)
            mounts = bind_mounts(rootfs, record.mounts, self._storage.volume_path)
            mounts += [*self._hosts_mount(rootfs, record), *extra_mounts]
            mode, netns_path = (network, None) if network else await self._networks.prepare(record)
            faults.point("container.start.network")
            spec = ContainerSpec(
                id=record.id, rootfs=rootfs, hostname=(record.name or record.id)[:HOSTNAME_MAX], process=process,
                mounts=mounts, network=mode, netns_path=netns_path,
                params=self._runtime.check_params(record.jail_param), **isolation,
                stop_signal=stop_signal_of(self._images.get(record.image_id)),
            )
            container_log = self._open_log(record.id, monitored=self._runtime.writes_logs)
            spec = dataclasses.replace(spec, log_path=container_log.path)
            run = await self._supervisor.start_container(spec, exec_id, self._after_exit, fanout=fanout,
                                                         log=container_log,
                                                         on_created=functools.partial(self._networks.attach, record))
        except BaseException as exc:
            if container_log is not None:
                container_log.abandon()
            await self._teardown(record.id)
            self._move(record, previous)
            if isinstance(exc, HostCommandError):
                raise _launch_error(exc) from None
            raise
        self._move(record, State.RUNNING)
        record.started_at = now_iso()
        if not automatic:  # a restarted container shows the exit that restarted it
            record.finished_at, record.exit_code, record.oom_killed = None, None, False
        self._save(record)
        if policies:
            self._last_start[record.id] = (list(cmd), user, list(env), tty)
            self._start_healthcheck(record)
        else:
            self._last_start.pop(record.id, None)
        log.info("container started", extra={"container": record.id, "exec": exec_id})
        self._events.publish("container", "start", record.id, name=record.name)
        return run

    def _open_log(self, container_id: str, *, monitored: bool) -> ContainerLog:
        reopen = functools.partial(self._runtime.reopen_log, container_id) if monitored else None
        return self.logs.open(container_id, monitored=monitored, reopen=reopen)

    def _start_healthcheck(self, record: ContainerRecord) -> None:
        if record.healthcheck is None:
            return
        image = self._images.get(record.image_id)
        self.health.begin(record.id)
        self._supervisor.spawn(record.id, self.health.monitor, record.id, record.healthcheck,
                               probe_argv(record.healthcheck, image.shell if image else []))

    def _hosts_mount(self, rootfs: Path, record: ContainerRecord) -> list[BindMount]:
        hosts = self._networks.hosts_file(record.id)
        if hosts is None:
            return []
        try:
            ensure_target(rootfs, "/etc/hosts", directory=False)
        except PathEscape as exc:
            raise InvalidArgument(f"could not provide /etc/hosts: {exc}") from None
        return [BindMount(source=hosts, destination="/etc/hosts", read_only=True)]

    def process_spec_in(self, record: ContainerRecord, cmd: list[str], user: str, env: list[str], tty: bool):
        """The spec of an exec in the running container `record` (healthchecks, builds)."""
        return process_spec(self._storage.rootfs_path(record.id), record, cmd or record.cmd or [],
                            user or self._default_user(record), env, tty)

    def _default_user(self, record: ContainerRecord) -> str:
        """The container's user; the jail parameter `exec.jail_user` wins, as upstream."""
        return self._runtime.check_params(record.jail_param).get("exec.jail_user") or record.user

    async def _after_exit(self, run: Run) -> None:
        """The main process exited: tear the container down under its lock, record the exit."""
        if not run.is_init:
            return
        async with self._lock(run.container_id):
            record = self._store.get(CONTAINER, run.container_id, ContainerRecord)
            faults.point("container.exit.locked")
            oom_killed = self._isolation.oom_killed(run.container_id)  # before teardown drops the counters
            await self._teardown(run.container_id)
            if record is None:
                return
            by_itself = self.state(record) is State.RUNNING  # else a stop (a user's, or shutdown) ended it
            if by_itself:
                self._move(record, State.STOPPING)
            self._move(record, State.STOPPED)
            record.exit_code, record.finished_at, record.oom_killed = run.exit_code, now_iso(), oom_killed
            self._save(record)
            if by_itself and record.id in self._last_start \
                    and policy_of(record).restarts_after(run.exit_code, record.restart_count):
                self.restarts.schedule(record.id, ran_for(record.started_at, record.finished_at),
                                       self._restart)
        if oom_killed:
            self._events.publish("container", "oom", run.container_id, name=record.name)
        self._events.publish("container", "die", run.container_id, name=record.name, exit_code=run.exit_code)

    def _publish_health(self, container_id: str, status: HealthStatus) -> None:
        record = self._store.get(CONTAINER, container_id, ContainerRecord)
        self._events.publish("container", "health_status", container_id, name=record.name if record else None,
                             health_status=status)

    async def _restart(self, pending: Pending) -> None:
        """The back-off of a restart is over: start the container again, as its last start did,
        unless a stop, removal, start or policy change came first (all checked under the lock)."""
        async with self._lock(pending.container_id):
            if not self.restarts.take(pending):
                return
            record = self._store.get(CONTAINER, pending.container_id, ContainerRecord)
            if record is None or self.state(record) is not State.STOPPED or policy_of(record).name in UPSTREAM:
                return
            cmd, user, env, tty = self._last_start.get(record.id, ([], "", [], False))
            record.restart_count += 1
            try:
                await self._start_locked(record, new_id(), cmd, user, env, tty, Fanout(), automatic=True)
            except KleeneError as exc:
                log.error("could not restart the container; it stays stopped: %s", exc.message,
                          extra={"container": record.id})
                return
        log.info("container restarted", extra={"container": record.id, "count": record.restart_count})
        self._events.publish("container", "restart", record.id, name=record.name,
                             restart_count=record.restart_count)

    async def _teardown(self, container_id: str) -> None:
        """Undo a start: runtime state, network namespace and plugs, the filesystem mount. Each
        step is idempotent and runs even when an earlier one failed; shielded, with a deadline.
        What fails is logged and left to start-up reconcile (it is all named after the id)."""
        steps = (("runtime state", self._runtime.delete), ("network", self._networks.release),
                 ("filesystem mount", self._storage.unmount_container_fs))
        with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_DEADLINE) as scope:
            for what, undo in steps:
                try:
                    await undo(container_id)
                except Exception as exc:
                    log.warning("could not remove the %s of a stopped container: %s", what, exc,
                                extra={"container": container_id})
        if scope.cancelled_caught:
            log.warning("tearing down a stopped container timed out", extra={"container": container_id})

    # --- build steps: the container's filesystem while it is stopped ------------------------------

    @contextlib.asynccontextmanager
    async def filesystem(self, container_id: str, layers: Sequence[str] | None = None) -> AsyncIterator[Path]:
        """The stopped container's filesystem, mounted while the block runs (under its lock)."""
        async with self._lock(container_id):
            record = self._reload(container_id)
            self.states.require(record.id, {State.CREATED, State.STOPPED}, ever_started=bool(record.started_at))
            rootfs = await self._storage.mount_container_fs(container_id, record.layers if layers is None else layers)
            try:
                yield rootfs
            finally:
                with trio.CancelScope(shield=True):
                    await self._storage.unmount_container_fs(container_id)

    @contextlib.asynccontextmanager
    async def files_of(self, container_id: str) -> AsyncIterator[tuple[ContainerRecord, Path]]:
        """The container's root while the block runs, under its lock (`cp`, `commit`): a running
        container's mounted filesystem, or a stopped one's, mounted for the block and unmounted
        after it, shielded, whatever ends the block. Refused while it starts, stops or goes."""
        async with self._lock(container_id):
            record = self._reload(container_id)
            state = self.states.require(record.id, {State.CREATED, State.STOPPED, State.RUNNING},
                                        ever_started=bool(record.started_at))
            if state is State.RUNNING:
                yield record, self._storage.rootfs_path(container_id)
                return
            rootfs = await self._storage.mount_container_fs(container_id, record.layers)
            try:
                faults.point("container.files.mounted")
                yield record, rootfs
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_DEADLINE):
                    await self._storage.unmount_container_fs(container_id)

    async def commit_layer(self, container_id: str) -> str:
        """Turn the stopped container's writable layer into a new layer; return its id."""
        async with self._lock(container_id):
            record = self._reload(container_id)
            self.states.require(record.id, {State.CREATED, State.STOPPED}, ever_started=bool(record.started_at))
            return await self._storage.commit_container_fs(container_id, new_id())

    async def commit_fs(self, ident: str) -> ContainerRecord:
        """`commit`: the stopped container's writable layer becomes a layer of its stack (the
        container goes on from it, unchanged to its processes); return the updated record.

        The new layer's name is stored before the storage moves anything: killed between the
        two, the next start finds it (`_settle_commit`) and puts the layer on the stack if it
        was made, so the container's files are never in a layer no record names."""
        container_id = self.get(ident, f"no such container '{ident}'").id
        async with self._lock(container_id):
            record = self._reload(container_id, f"no such container '{ident}'")
            self.states.require(record.id, {State.CREATED, State.STOPPED}, ever_started=bool(record.started_at),
                                refusal={s: f"container is {s.value}: stop it before committing"
                                         for s in (State.STARTING, State.RUNNING, State.STOPPING)})
            record.committing = new_id()
            self._save(record)
            faults.point("container.commit.named")
            try:
                await self._storage.commit_container_fs(container_id, record.committing)
                faults.point("container.commit.moved")
            finally:
                with trio.CancelScope(shield=True):
                    await self._settle_commit(record)
            return record

    async def _settle_commit(self, record: ContainerRecord) -> None:
        """Finish the record of a commit that ended, or was killed, after its layer's name was
        stored: the layer goes on the container's stack if the storage made it."""
        layer, record.committing = record.committing, None
        if layer and layer not in record.layers and layer in await trio.to_thread.run_sync(self._storage.list_layers):
            record.layers = [*record.layers, layer]
        self._save(record)

    async def reclone(self, container_id: str, layers: Sequence[str]) -> None:
        """A build stage that continues an earlier one: with `CLONE_AT_CREATE` the container's
        filesystem was cloned from the image at create, so it becomes a clone of the earlier
        stage's top layer instead (without it, `layers` are composed at mount: nothing to do)."""
        if Capability.CLONE_AT_CREATE not in self._storage.capabilities:
            return
        async with self._lock(container_id):
            record = self._reload(container_id)
            self.states.require(record.id, {State.CREATED}, ever_started=bool(record.started_at))
            if record.layers[-1:] == list(layers[-1:]):
                return
            record.layers = list(layers)
            self._save(record)
            with trio.CancelScope(shield=True):
                await self._storage.remove_container_fs(container_id)
                await self._storage.create_container_fs(container_id, record.layers)

    def set_stack(self, container_id: str, layers: Sequence[str], workdir: str) -> ContainerRecord:
        """Record a new layer stack and working directory (a build step's result)."""
        record = self._reload(container_id)
        self.states.require(record.id, {State.CREATED, State.STOPPED}, ever_started=bool(record.started_at))
        record.layers, record.workdir = list(layers), workdir
        self._save(record)
        return record

    # --- start-up -----------------------------------------------------------------------------

    async def reconcile(self, *, live_restore: bool = False) -> None:
        """At start-up. A commit a crash cut is finished first (`commit_fs`). With `live_restore`,
        containers a previous daemon left running under their monitors are adopted (supervised,
        logs followed, network and mounts kept). Every other runtime container, mount, bundle and
        cgroup of ours goes; the exit of a container that ended while no daemon watched is
        recorded; then container directories and logs no record owns, and build containers a
        crashed build left. Never raises: what fails is logged and skipped."""
        for record in self._store.all(CONTAINER, ContainerRecord):
            if record.committing:
                log.warning("finishing a commit a previous daemon left", extra={"container": record.id})
                await _guarded("finish a commit", self._settle_commit, record)
        found: dict[str, FoundContainer] = {}
        try:
            found = self._runtime.find_containers()
        except Exception:
            log.exception("start-up: could not find the containers a previous daemon left; going on")
        adopted: set[str] = set()
        for record in self._store.all(CONTAINER, ContainerRecord) if live_restore else []:
            gone = found.get(record.id)
            # Only what this store says runs: a start that a crash cut between the runtime's
            # create and the record has a monitor too, and is removed like any leftover.
            was_running = bool(record.started_at) and not record.finished_at
            if (gone is not None and gone.running and was_running and not _BUILD_CONTAINER.fullmatch(record.name or "")
                    and await self._adopt(record, gone)):
                adopted.add(record.id)
        await _guarded("remove runtime containers", self._runtime.cleanup, adopted)
        await _guarded("remove container filesystems no record owns", self._storage.cleanup,
                       {r.id for r in self._store.all(CONTAINER, ContainerRecord)}, adopted)
        for record in self._store.all(CONTAINER, ContainerRecord):
            if _BUILD_CONTAINER.fullmatch(record.name or ""):
                log.warning("removing the container of a build a previous daemon left", extra={"container": record.id})
                await _guarded("remove a build container", self._destroy_quietly, record)
            elif record.id not in adopted and record.started_at and not record.finished_at:
                self._record_unwatched_exit(record, found.get(record.id), live_restore=live_restore)
        self.logs.reconcile({record.id for record in self._store.all(CONTAINER, ContainerRecord)})

    async def _adopt(self, record: ContainerRecord, found: FoundContainer) -> bool:
        """Supervise a running container a previous daemon started; False when it cannot be
        (logged: start-up then stops it and records its end). Its restart policy and
        healthcheck apply as after a start (a restart runs the container's own command)."""
        async with self._lock(record.id):
            try:
                await self._networks.adopt(record)
                container_log = self._open_log(record.id, monitored=True)
                try:
                    await self._supervisor.adopt_container(record.id, new_id(), self._after_exit, fanout=Fanout(),
                                                           log=container_log,
                                                           stop_signal=stop_signal_of(self._images.get(record.image_id)))
                except BaseException:
                    container_log.abandon()
                    raise
            except Exception as exc:
                log.warning("could not adopt a running container, stopping it: %s", exc, extra={"container": record.id})
                with contextlib.suppress(Exception):
                    await self._networks.release(record.id)
                return False
            self._move(record, State.STARTING)
            self._move(record, State.RUNNING)
            self._last_start[record.id] = ([], "", [], found.tty)
            self._start_healthcheck(record)
        log.info("container adopted: it ran on while no daemon watched", extra={"container": record.id})
        return True

    def _record_unwatched_exit(self, record: ContainerRecord, found: FoundContainer | None, *,
                               live_restore: bool) -> None:
        """A container that was running when the previous daemon ended and is not adopted: record
        its exit as its monitor wrote it, or that it was stopped now."""
        if found is not None and found.exit_code is not None:
            record.exit_code, record.oom_killed = found.exit_code, found.oom
            record.finished_at = iso_of(found.finished_at) if found.finished_at else now_iso()
            policy = policy_of(record)
            if policy.restarts_after(found.exit_code, record.restart_count) \
                    and not policy.starts_with_daemon(record.stopped_by_user):
                self._restart_at_startup.add(record.id)  # `on_startup` lists it
        else:
            if found is not None and not found.running and live_restore:
                log.warning("the monitor of container %s died: it was stopped and cleaned up", record.id,
                            extra={"container": record.id})
                record.exit_code = -1
            record.finished_at = now_iso()
        self._save(record)
        self._events.publish("container", "die", record.id, name=record.name, exit_code=record.exit_code)

    async def _destroy_quietly(self, record: ContainerRecord) -> None:
        async with self._lock(record.id):
            with contextlib.suppress(Internal):
                await self._destroy(record)

    def on_startup(self) -> list[ContainerRecord]:
        """What starts with the daemon: `on-startup` and `always`, `unless-stopped` unless a user stopped it,
        and what ended while no daemon ran and its policy restarts (`on-failure` after a failure)."""
        restart, self._restart_at_startup = self._restart_at_startup, set()
        return [r for r in self._store.all(CONTAINER, ContainerRecord, order="created ASC")
                if policy_of(r).starts_with_daemon(r.stopped_by_user) or r.id in restart]


def _launch_error(exc: HostCommandError) -> KleeneError:
    """A failed runtime launch: the user's mistake (exit 126/127, as a shell and docker report
    it, with the runtime's reason) or the host's (an internal error with the whole message)."""
    reason = exc.stderr or str(exc)
    lowered = reason.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return ExecFailed(reason, exit_code=127)
    if "permission denied" in lowered or "is a directory" in lowered:
        return ExecFailed(reason, exit_code=126)
    return Internal(f"{exc.argv[0]} exited with {exc.returncode}: {reason}")


async def _guarded(what: str, fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        await fn(*args)
    except Exception:
        log.exception("start-up: could not %s; going on", what)
