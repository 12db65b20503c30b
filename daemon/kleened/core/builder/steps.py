"""Executing the instructions of one build stage in its build container.

A *stage* is a FROM and what follows it up to the next FROM; each runs in a build container of its own (the last
one is `builder_<image id>`). The stage's layer stack is kept in `Stage.layers` and written to its container's record
whenever it changes, so the stack is always referenced by a stored object (nothing can free a layer under a build)
and a RUN starts on exactly that stack.

- RUN starts the container with the command as its main process (tini is PID 1, so a background process it leaves,
  `sleep 1000 &`, ends with the container), relays the output as text, then commits the container's writable
  layer as a new layer and announces a snapshot: `--> Snapshot created: @<12hex>`.
- COPY mounts the container's filesystem, copies through the `BuildFiles` driver, unmounts, commits, snapshots.
- WORKDIR creates its directory (a layer without a snapshot, as upstream snapshots only RUN and COPY) and becomes
  the working directory of later RUNs and of the image.
- USER, ENV, ARG, CMD, ENTRYPOINT, EXPOSE and LABEL only change the build state.

With a cache, RUN, COPY and WORKDIR first look up their key (`cache`) and reuse the layer instead of running.
A step that fails raises `StepFailed` with the line the build log shows; nothing is undone here (the builder decides
what is kept).
"""

from __future__ import annotations

import codecs
import contextlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from kleene_protocol.dockerignore import DockerIgnore
from kleene_protocol.ids import new_id

from ... import faults
from ...platform.base import LayerStorage
from ...platform.rootpath import PathEscape, ensure_target, read_text_in_root, resolve_in_root
from ..containers import Containers
from ..errors import KleeneError
from ..fanout import Fanout
from ..images import Images
from ..records import ContainerRecord
from ..users import resolve_user
from .cache import BuildCache, cache_key
from .dockerfile import Cmd, Copy, Entrypoint, Expose, Instruction, Label, Run, User, Workdir, join_workdir
from .expand import BuildScope

Emit = Callable[[str], Awaitable[None]]
MAX_ENV_STRING = 128 * 1024 - 1  # Linux's MAX_ARG_STRLEN: a longer NAME=value cannot reach a process
SNAPSHOT_LINE = "--> Snapshot created: {snapshot}"
CACHE_LINE = "--> Using cache"


class StepFailed(Exception):
    """A step failed; `line` is what the build log shows."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class CopyPlan(Protocol):
    def __len__(self) -> int: ...
    def digest(self) -> str: ...
    def apply(self, rootfs: Path, dest: str, *, into_dir: bool, uid: int, gid: int, check: Callable[[], None]) -> int:
        ...


class BuildFiles(Protocol):
    """The host side of COPY and uploads (`platform.linux.copying.HostFiles`); methods block, raise ValueError."""

    def plan(self, tree: Path, patterns: Sequence[str], ignore: DockerIgnore | None) -> CopyPlan: ...
    def unpack(self, archive: Path, dest: Path, *, max_bytes: int, check: Callable[[], None]) -> int: ...


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
    stages: dict[str, Stage] = field(default_factory=dict)  # finished stages by name and by index
    layers_made: set[str] = field(default_factory=set)
    scratch: set[str] = field(default_factory=set)  # temporary filesystems for COPY --from, while they exist

    async def execute(self, stage: Stage, instr: Instruction) -> str:
        """Run one resolved instruction; return its snapshot name, or ""."""
        if isinstance(instr, Run):
            return await self.run(stage, instr)
        if isinstance(instr, Copy):
            return await self.copy(stage, instr)
        if isinstance(instr, Workdir):
            await self.workdir(stage, instr)
        elif isinstance(instr, User):
            stage.user = instr.user
        elif isinstance(instr, Cmd):
            stage.cmd = list(instr.argv)
        elif isinstance(instr, Entrypoint):
            stage.entrypoint = list(instr.argv)
        elif isinstance(instr, Expose):
            stage.exposed_ports = list(dict.fromkeys([*stage.exposed_ports, *instr.ports]))
        elif isinstance(instr, Label):
            stage.labels.update(instr.pairs)
        stage.env = self.scope.env  # ENV and ARG have changed the scope already (`Instruction.resolve`)
        return ""

    # --- RUN ----------------------------------------------------------------------------------

    async def run(self, stage: Stage, instr: Run) -> str:
        argv, env = list(instr.argv), self.scope.run_env()
        for item in env:
            if len(item.encode(errors="surrogatepass")) > MAX_ENV_STRING:
                name = item.partition("=")[0][:64]
                raise StepFailed(f"error: build variable {name} is larger than {MAX_ENV_STRING} bytes: "
                                 "a process cannot receive it")
        key = self._key(stage, "RUN", argv)
        if await self._reuse(stage, key):
            return await self._snapshot(stage)
        fanout = Fanout()
        output = fanout.subscribe(lossless=True)
        try:
            run = await self.containers.start(self.sync(stage), exec_id=new_id(), cmd=argv, user=stage.user,
                                              env=env, tty=False, fanout=fanout)
        except KleeneError as exc:
            output.close()
            raise StepFailed(f"error: {exc.message}") from None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
        async with output:
            async for _stream, data in output:
                if text := decoder.decode(data):
                    await self._output(text)
        if text := decoder.decode(b"", final=True):
            await self._output(text)
        await run.done.wait()
        if run.exit_code != 0:
            raise StepFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {run.exit_code}")
        await self._commit(stage, key)
        return await self._snapshot(stage)

    async def _output(self, text: str) -> None:
        if not self.quiet:
            await self.emit(text)

    # --- COPY ---------------------------------------------------------------------------------

    async def copy(self, stage: Stage, instr: Copy) -> str:
        dest = posixpath.normpath(posixpath.join(stage.workdir, instr.dest))
        into_dir = instr.dest.endswith("/") or posixpath.basename(instr.dest) in (".", "..")
        async with self._source_tree(instr.from_) as (tree, ignore, tree_key):
            try:
                plan = await trio.to_thread.run_sync(self.files.plan, tree, instr.sources, ignore)
            except ValueError as exc:
                raise StepFailed(f"COPY failed: {exc}") from None
            if len(plan) > 1 and not into_dir:
                raise StepFailed("COPY failed: when copying more than one source, the destination must be a "
                                 "directory and end with a /")
            key = None
            if self.cache is not None:
                digest = tree_key if tree_key is not None else await trio.to_thread.run_sync(plan.digest)
                key = self._key(stage, "COPY", list(instr.sources), dest, into_dir, instr.chown, digest)
                if await self._reuse(stage, key):
                    return await self._snapshot(stage)
            async with self.containers.filesystem(stage.container_id, stage.layers) as rootfs:
                try:
                    uid, gid = self._owner(rootfs, instr.chown)
                    await trio.to_thread.run_sync(lambda: plan.apply(
                        rootfs, dest, into_dir=into_dir, uid=uid, gid=gid, check=trio.from_thread.check_cancelled))
                except ValueError as exc:
                    raise StepFailed(f"COPY failed: {exc}") from None
        await self._commit(stage, key)
        return await self._snapshot(stage)

    @contextlib.asynccontextmanager
    async def _source_tree(self, ref: str | None) -> AsyncIterator[tuple[Path, DockerIgnore | None, str | None]]:
        """(tree, its ignore rules, a cache digest standing for its content) for COPY [--from=ref]."""
        if ref is None:
            yield self.context, self.ignore, None
            return
        layers = self._layers_of(ref)
        scratch = new_id()
        self.scratch.add(scratch)
        await self.storage.create_container_fs(scratch)
        try:
            rootfs = await self.storage.mount_container_fs(scratch, layers)
            yield rootfs, None, cache_key("layers", layers)  # layers never change: their ids stand for the content
        finally:
            with trio.CancelScope(shield=True):
                await self.storage.remove_container_fs(scratch)
                self.scratch.discard(scratch)

    def _layers_of(self, ref: str) -> list[str]:
        stage = self.stages.get(ref.lower())
        if stage is not None:
            return list(stage.layers)
        try:
            image, snapshot = self.images.resolve_ref(ref)
        except KleeneError as exc:
            raise StepFailed(f"error: COPY --from={ref}: {exc.message}") from None
        return image.layers_at(snapshot)

    @staticmethod
    def _owner(rootfs: Path, chown: str | None) -> tuple[int, int]:
        """uid and gid of copied files: root, or `--chown` resolved with the image's passwd and group files."""
        if not chown:
            return 0, 0
        try:
            user = resolve_user(chown, read_text_in_root(rootfs, "/etc/passwd"),
                                read_text_in_root(rootfs, "/etc/group"))
        except (KleeneError, PathEscape) as exc:
            raise StepFailed(f"COPY failed: --chown={chown}: {exc}") from None
        return user.uid, user.gid

    # --- WORKDIR ------------------------------------------------------------------------------

    async def workdir(self, stage: Stage, instr: Workdir) -> None:
        """Create the directory unless it exists; only a created one becomes a layer."""
        stage.workdir = join_workdir(stage.workdir, instr.path)
        key = self._key(stage, "WORKDIR", stage.workdir)
        if await self._reuse(stage, key, announce=False):
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
            await self._commit(stage, key)
        else:
            self.sync(stage)
            if self.cache is not None:
                self.cache.record(key, "")

    # --- layers, snapshots and the cache ------------------------------------------------------

    def _key(self, stage: Stage, kind: str, *parts: object) -> str:
        return cache_key(self.config_key, stage.layers, self.scope.run_env(), stage.user, stage.workdir, kind, *parts)

    async def _reuse(self, stage: Stage, key: str, *, announce: bool = True) -> bool:
        if self.cache is None:
            return False
        layer = self.cache.lookup(key)
        if layer is None:
            return False
        if layer:
            stage.layers.append(layer)
        self.sync(stage)  # before any await: from now on the container record holds the layer
        if announce and not self.quiet:
            await self.emit(CACHE_LINE)
        return True

    async def _commit(self, stage: Stage, key: str | None) -> None:
        layer = await self.containers.commit_layer(stage.container_id)
        faults.point("build.step.committed")
        self.layers_made.add(layer)
        stage.layers.append(layer)
        self.sync(stage)
        if self.cache is not None and key is not None:
            self.cache.record(key, layer)

    async def _snapshot(self, stage: Stage) -> str:
        """Name the stack as it is now; the line is sent even when quiet (klee looks for it)."""
        name = "@" + new_id()
        stage.snapshots[name] = len(stage.layers)
        stage.last_snapshot = name
        await self.emit(SNAPSHOT_LINE.format(snapshot=name))
        return name

    def sync(self, stage: Stage) -> ContainerRecord:
        """Write the stage's stack and working directory to its container's record; return the record."""
        return self.containers.set_stack(stage.container_id, stage.layers, stage.workdir)
