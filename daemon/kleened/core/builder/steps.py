"""Executing the instructions of one build stage in its build container.

A *stage* is a FROM and what follows it up to the next FROM; each runs in a build container of its own (the last
one is `builder_<image id>`). The stage's layer stack is kept in `Stage.layers` and written to its container's record
whenever it changes, so the stack is always referenced by a stored object (nothing can free a layer under a build)
and a RUN starts on exactly that stack.

- RUN (`run_step`) starts the container with the command as its main process, relays the output, commits the
  container's writable layer as a new layer and announces a snapshot: `--> Snapshot created: @<12hex>`.
- COPY and ADD (`copy_step`) mount the container's filesystem, copy through the `BuildFiles` driver, unmount,
  commit, snapshot.
- WORKDIR creates its directory (a layer without a snapshot, as upstream snapshots only RUN and COPY) and becomes
  the working directory of later RUNs and of the image.
- USER, ENV, ARG, CMD, ENTRYPOINT, EXPOSE, LABEL, MAINTAINER, VOLUME, STOPSIGNAL, SHELL, ONBUILD and HEALTHCHECK only
  change the build state.

With a cache, RUN, COPY, ADD and WORKDIR first look up their key (`cache`) and reuse the layer instead of running.
A step that fails raises `StepFailed` with the line the build log shows; nothing is undone here (the builder decides
what is kept).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kleene_protocol.dockerignore import DockerIgnore
from kleene_protocol.ids import new_id
from kleene_protocol.models import HealthConfig

from ... import faults
from ...platform.base import BuildFiles, Capability, LayerStorage
from ...platform.posix.rootpath import PathEscape, ensure_target, read_text_in_root, resolve_in_root
from ..containers import Containers
from ..errors import KleeneError
from ..images import Images
from ..records import ContainerRecord
from ..users import resolve_user
from .cache import BuildCache, cache_key
from .cachemounts import CacheMounts
from .dockerfile import (
    Cmd,
    Copy,
    Entrypoint,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    join_workdir,
)
from .runmounts import RunHost
from .scope import BuildScope

Emit = Callable[[str], Awaitable[None]]
SNAPSHOT_LINE = "--> Snapshot created: {snapshot}"
CACHE_LINE = "--> Using cache"


class StepFailed(Exception):
    """A step failed; `line` is what the build log shows."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


@dataclass(eq=False)
class Stage:
    """The state of one stage as its instructions change it; what the image (or a later stage) starts from."""

    index: int
    container_id: str
    parent_id: str  # the image at the bottom of the stage's stack
    layers: list[str]
    user: str
    workdir: str
    cmd: list[str] | None
    entrypoint: list[str] | None
    exposed_ports: list[str]
    labels: dict[str, str]
    env: list[str] = field(default_factory=list)  # the stage's ENV, kept when the stage ends (FROM <stage>)
    snapshots: dict[str, int] = field(default_factory=dict)
    last_snapshot: str = ""
    shell: list[str] = field(default_factory=list)  # [] is /bin/sh -c
    volumes: list[str] = field(default_factory=list)
    stop_signal: str = ""
    healthcheck: HealthConfig | None = None
    onbuild: list[str] = field(default_factory=list)  # this stage's own triggers (a parent's are not inherited)
    args: dict[str, str] = field(default_factory=dict)  # the ARGs a stage built FROM this one inherits
    reused_snapshot: str = ""  # the snapshot name of the step just taken from the cache
    pending_key: str | None = None  # the cache key of the layer just committed, recorded with its snapshot


@dataclass(eq=False)
class StepRunner:
    """Runs instructions for one build; `layers_made` collects every layer its commits created."""

    containers: Containers
    images: Images
    storage: LayerStorage
    files: BuildFiles
    scope: BuildScope
    emit: Emit
    quiet: bool
    context: Path
    ignore: DockerIgnore
    config_key: str  # the build container configuration, as part of every cache key
    cache: BuildCache | None = None
    host: RunHost | None = None  # RUN mounts and downloads need it
    cache_mounts: CacheMounts | None = None
    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    build_id: str = ""
    stages: dict[str, Stage] = field(default_factory=dict)  # finished stages by name and by index
    layers_made: set[str] = field(default_factory=set)
    scratch_fs: set[str] = field(default_factory=set)  # temporary filesystems for COPY --from, while they exist
    scratch_path: Path | None = None  # the build's private directory on the host, once made

    async def execute(self, stage: Stage, instr: Instruction) -> str:
        """Run one resolved instruction; return its snapshot name, or ""."""
        from . import copy_step, run_step  # they import this module

        if isinstance(instr, Run):
            return await run_step.run(self, stage, instr)
        if isinstance(instr, Copy):
            return await copy_step.copy(self, stage, instr)
        if isinstance(instr, Workdir):
            await self.workdir(stage, instr)
        else:
            apply_setting(stage, instr)
        stage.env = self.scope.env  # ENV and ARG have changed the scope already (`Instruction.resolve`)
        stage.args = self.scope.args
        return ""

    # --- WORKDIR ------------------------------------------------------------------------------

    async def workdir(self, stage: Stage, instr: Workdir) -> None:
        """Create the directory unless it exists; only a created one becomes a layer."""
        stage.workdir = join_workdir(stage.workdir, instr.path)
        key = self.key(stage, "WORKDIR", stage.workdir)
        if await self.reuse(stage, key, announce=False):
            return
        async with self.containers.filesystem(stage.container_id, stage.layers) as rootfs:
            try:
                target = resolve_in_root(rootfs, stage.workdir)
                created = not target.is_dir()
                if created:
                    if target.is_symlink() or target.exists():
                        raise StepFailed(f"error: WORKDIR {stage.workdir}: a file is in the way")
                    ensure_target(rootfs, stage.workdir, directory=True)
            except PathEscape as exc:
                raise StepFailed(f"error: WORKDIR {stage.workdir}: {exc}") from None
        if created:
            await self.commit(stage, key, snapshot=False)
        else:
            self.sync(stage)
            if self.cache is not None:
                self.cache.record(key, "", "")

    # --- sources: the context, stages and images ----------------------------------------------

    @contextlib.asynccontextmanager
    async def source_tree(self, ref: str | None) -> AsyncIterator[tuple[Path, DockerIgnore | None, str | None]]:
        """(tree, its ignore rules, a cache digest standing for its content) of the context (ref None) or of a
        stage or image, whose layers are mounted on a throw-away filesystem for the block."""
        if ref is None:
            yield self.context, self.ignore, None
            return
        layers = self.layers_of(ref)
        scratch = new_id()
        self.scratch_fs.add(scratch)
        await self.storage.create_container_fs(scratch, layers)
        try:
            rootfs = await self.storage.mount_container_fs(scratch, layers)
            yield rootfs, None, cache_key("layers", layers)  # layers never change: their ids stand for the content
        finally:
            with trio.CancelScope(shield=True):
                await self.storage.remove_container_fs(scratch)
                self.scratch_fs.discard(scratch)

    def layers_of(self, ref: str) -> list[str]:
        stage = self.stages.get(ref.lower())
        if stage is not None:
            return list(stage.layers)
        try:
            image, snapshot = self.images.resolve_ref(ref)
        except KleeneError as exc:
            raise StepFailed(f"error: --from={ref}: {exc.message}") from None
        return image.layers_at(snapshot)

    async def tree_digest(self, ref: str | None, source: str) -> str:
        """A digest of what `source` of the context, a stage or an image holds (for cache keys)."""
        if ref is not None:
            return cache_key("layers", self.layers_of(ref), source)
        try:
            plan = await trio.to_thread.run_sync(self.files.plan, self.context, [source], self.ignore)
            return await trio.to_thread.run_sync(plan.digest)
        except ValueError as exc:
            raise StepFailed(f"error: RUN --mount source '{source}': {exc}") from None

    async def scratch_dir(self) -> Path:
        """The build's private host directory (secrets, scripts, downloads), made on first use."""
        if self.scratch_path is None:
            assert self.host is not None, "this builder has no host driver for RUN mounts"
            self.scratch_path = await trio.to_thread.run_sync(self.host.make_scratch, self.build_id or new_id())
        return self.scratch_path

    def owner(self, rootfs: Path, chown: str | None) -> tuple[int, int]:
        """uid and gid of copied files: root, or `--chown` resolved with the image's passwd and group files."""
        if not chown:
            return 0, 0
        try:
            user = resolve_user(chown, read_text_in_root(rootfs, "/etc/passwd"),
                                read_text_in_root(rootfs, "/etc/group"))
        except (KleeneError, PathEscape) as exc:
            raise StepFailed(f"COPY failed: --chown={chown}: {exc}") from None
        return user.uid, user.gid

    # --- layers, snapshots and the cache ------------------------------------------------------

    def key(self, stage: Stage, kind: str, *parts: object) -> str:
        return cache_key(self.config_key, stage.layers, self.scope.run_env(), stage.user, stage.workdir, kind, *parts)

    async def reuse(self, stage: Stage, key: str, *, announce: bool = True) -> bool:
        if self.cache is None:
            return False
        entry = self.cache.lookup(key)
        if entry is None:
            return False
        if entry.layer:
            stage.layers.append(entry.layer)
        self.sync(stage)  # before any await: from now on the container record holds the layer
        stage.reused_snapshot = entry.snapshot
        if announce and not self.quiet:
            await self.emit(CACHE_LINE)
        return True

    async def commit(self, stage: Stage, key: str | None, *, snapshot: bool = True) -> str:
        """Commit the container's changes as a layer on the stage's stack; then (RUN, COPY) name a snapshot."""
        layer = await self.commit_layer(stage)
        self.adopt(stage, layer)
        if snapshot:
            stage.pending_key = key
            return await self.snapshot(stage)
        if self.cache is not None and key is not None:
            self.cache.record(key, layer, "")
        return ""

    async def commit_layer(self, stage: Stage) -> str:
        """The container's writable layer as a new layer, not yet on the stage's stack."""
        layer = await self.containers.commit_layer(stage.container_id)
        faults.point("build.step.committed")
        self.layers_made.add(layer)
        return layer

    def adopt(self, stage: Stage, layer: str) -> None:
        stage.layers.append(layer)
        self.sync(stage)

    async def snapshot(self, stage: Stage) -> str:
        """Name the stack as it is now; the line is sent even when quiet (klee looks for it). A step reused from
        the cache gets the snapshot name it had, so an unchanged rebuild names the same snapshots; a committed
        step's cache entry is recorded with its name. Where layers are the storage's own snapshots (ZFS), the name
        is the snapshot's, as upstream shows it."""
        own = Capability.SNAPSHOT in self.storage.capabilities and stage.layers
        name = stage.reused_snapshot or "@" + (stage.layers[-1] if own else new_id())
        if self.cache is not None and stage.pending_key is not None:
            self.cache.record(stage.pending_key, stage.layers[-1], name)
        stage.reused_snapshot, stage.pending_key = "", None
        stage.snapshots[name] = len(stage.layers)
        stage.last_snapshot = name
        await self.emit(SNAPSHOT_LINE.format(snapshot=name))
        return name

    def sync(self, stage: Stage) -> ContainerRecord:
        """Write the stage's stack and working directory to its container's record; return the record."""
        return self.containers.set_stack(stage.container_id, stage.layers, stage.workdir)


def apply_setting(stage: Stage, instr: Instruction) -> None:
    """An instruction that only changes the stage's settings (what the image records)."""
    if isinstance(instr, User):
        stage.user = instr.user
    elif isinstance(instr, Cmd):
        stage.cmd = instr.command(stage.shell)
    elif isinstance(instr, Entrypoint):
        stage.entrypoint = instr.command(stage.shell)
    elif isinstance(instr, Expose):
        stage.exposed_ports = list(dict.fromkeys([*stage.exposed_ports, *instr.ports]))
    elif isinstance(instr, Label):  # and MAINTAINER
        stage.labels.update(instr.pairs)
    elif isinstance(instr, Volume):
        stage.volumes = list(dict.fromkeys([*stage.volumes, *instr.paths]))
    elif isinstance(instr, StopSignal):
        stage.stop_signal = instr.signal
    elif isinstance(instr, Shell):
        stage.shell = list(instr.argv)
    elif isinstance(instr, Onbuild):
        stage.onbuild = [*stage.onbuild, instr.trigger]
    elif isinstance(instr, Healthcheck):
        stage.healthcheck = HealthConfig(test=list(instr.test), interval=instr.interval, timeout=instr.timeout,
                                         start_period=instr.start_period, start_interval=instr.start_interval,
                                         retries=instr.retries)
