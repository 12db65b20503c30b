"""Image builds (`GET /images/build`): a Dockerfile and a context in, an image out, the log streamed as text.

Flow (upstream's, kleened-api.md §4.3):
1. read and parse the Dockerfile; a failure is a `DockerfileError` and nothing has been created;
2. resolve every FROM (meta ARGs only, `container_config.image` replacing the last stage's FROM); an unknown image
   or snapshot fails the build with `error: could not find image X` before anything exists;
3. create the build container of the last stage, `builder_<id>`: its id is the image id, sent as the starting
   message; earlier stages get containers `builder_<id>_stage<n>` when they start;
4. run the instructions in order, `Step n/N : <line>` before each (not when quiet) and
   `--> Snapshot created: @<12hex>` after each RUN and COPY (always);
5. store the image: the last stage's layers, snapshots and state, `instructions` = `[line, snapshot or ""]` per line,
   `parent_id` = the image the stage started from; then remove the build containers (their layers now belong to the
   image) and every layer the build made that no image stacks (earlier stages').

A step that fails ends the build with `BuildFailed(data)`: with `cleanup` everything is removed and data is "";
without, the failed state (the failed step's changes included) is kept as the image `<name>:failed` with the build's
id, and data is its last snapshot or `no snapshots available`. Anything else that ends the build (the client went
away and the handler was cancelled, a bug) removes everything it created, shielded, before it propagates.

Beyond upstream: ENTRYPOINT, EXPOSE, LABEL, multi-stage builds (`FROM x AS name`, `COPY --from`), .dockerignore,
the build cache (`ImageBuildConfig.cache`, see `cache`) and uploaded contexts (`context`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kleene_protocol.ids import new_id
from kleene_protocol.models import ContainerConfig, ContainerUpdate, EndPointConfig, ImageBuildConfig
from kleene_protocol.refs import InvalidReference, split_snapshot

from ...platform.base import HostCommandError, LayerStorage
from ..clock import now_iso
from ..containers import Containers
from ..errors import KleeneError, NotFound
from ..images import Images, parse_nametag
from ..networks import Networks
from ..records import ImageRecord
from ..store import Store
from .cache import BuildCache, cache_key
from .context import read_dockerfile, read_ignore, uploaded_context
from .dockerfile import Dockerfile, DockerfileError, From
from .expand import BuildScope, ExpansionError
from .steps import BuildFiles, Stage, StepFailed, StepRunner

log = logging.getLogger(__name__)

Emit = Callable[[str], Awaitable[None]]
NO_SNAPSHOTS = "no snapshots available"
PARENT_LINE = "Using user-supplied parent image: '{image}'"
MAX_LINE = 64 * 1024  # characters of one log frame: Step and error lines quote Dockerfile lines of any length,
# and upstream klee refuses frames over 1 MiB
STOP_GRACE = 1.0  # seconds between TERM and KILL for a build container of a cancelled build
DISCARD_DEADLINE = 120.0  # seconds for removing what a failed or cancelled build made


def clip(text: str) -> str:
    """`text`, shortened to `MAX_LINE` characters."""
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


class BuildFailed(Exception):
    """The build failed after its starting message; `data` goes into the closing message."""

    def __init__(self, data: str) -> None:
        super().__init__(data)
        self.data = data


@dataclass(frozen=True)
class _Base:
    """What a stage starts from: an image (at a snapshot) or an earlier stage; `root` is the image at the bottom."""

    root: ImageRecord
    snapshot: str = ""
    stage: int | None = None


class _SetupFailed(Exception):
    def __init__(self, steps: list[int], line: str) -> None:
        super().__init__(line)
        self.steps, self.line = steps, line


class _MissingImage(_SetupFailed):
    def __init__(self, steps: list[int], ref: str) -> None:
        super().__init__(steps, f"error: could not find image {ref}")
        self.ref = ref


# A FROM image that is not local, pulled when the build asks for it (`ImageBuildConfig.pull`):
# `(reference, config, emit)` -> the image id; raises `ValueError` with the reason it could not be pulled.
PullHook = Callable[[str, ImageBuildConfig, Emit], Awaitable[str]]


@dataclass(eq=False)
class _Build:
    id: str
    config: ImageBuildConfig
    dockerfile: Dockerfile
    bases: list[_Base]
    runner: StepRunner
    containers: list[str] = field(default_factory=list)  # created and not yet removed, in creation order
    current: Stage | None = None
    log: list[tuple[str, str]] = field(default_factory=list)  # (line, snapshot) per instruction run


class Builder:
    """The build service. `files` is the host driver for COPY and uploads; uploads unpack below `tmp_dir`."""

    def __init__(self, *, store: Store, images: Images, containers: Containers, networks: Networks,
                 storage: LayerStorage, files: BuildFiles, tmp_dir: Path, pull: PullHook | None = None) -> None:
        self._images = images
        self._pull = pull
        self._containers = containers
        self._networks = networks
        self._storage = storage
        self._files = files
        self._tmp_dir = tmp_dir
        self._cache = BuildCache(store, self._image_layers, lambda layer: storage.layer_path(layer).is_dir())

    def _image_layers(self) -> set[str]:
        return {layer for record in self._images.records() for layer in record.layers}

    def uploaded_context(self, chunks: AsyncIterator[bytes]) -> contextlib.AbstractAsyncContextManager[Path]:
        """A context received as a tar stream, for the duration of the block (see `context.uploaded_context`)."""
        return uploaded_context(chunks, tmp_dir=self._tmp_dir, files=self._files)

    async def build(self, config: ImageBuildConfig, context: Path, *, started: Emit, emit: Emit) -> str:
        """Build by `config` from `context`; return the image id.

        `started(id)` is called once, before any other output; `emit(text)` sends a log frame. Raises
        `DockerfileError` (before `started`) and `BuildFailed`; cancellation propagates after the cleanup.
        """
        dockerfile = read_dockerfile(context, config.dockerfile)
        emit = _clipped(emit)
        try:
            scope = BuildScope(config.buildargs)
        except ExpansionError as exc:
            raise DockerfileError(exc.message) from None
        runner = StepRunner(
            containers=self._containers, images=self._images, storage=self._storage, files=self._files,
            scope=scope, emit=emit, quiet=config.quiet, context=context, ignore=read_ignore(context),
            config_key=_config_key(config), cache=self._cache if config.cache else None,
        )
        try:
            bases = await self._plan_pulling(dockerfile, config, emit)
            build = _Build(id="", config=config, dockerfile=dockerfile, bases=bases, runner=runner)
            try:
                build.id = await self._new_container(build, bases[-1], rename=False)
            except StepFailed as exc:
                raise _SetupFailed([], exc.line) from None
        except _SetupFailed as exc:
            await started(new_id())  # upstream's id for a build that never got a container
            for index in [] if config.quiet else exc.steps:
                await emit(dockerfile.status(index))
            await emit(exc.line)
            raise BuildFailed("") from None
        try:
            try:
                await started(build.id)
                return await self._run(build)
            except StepFailed as exc:
                failure = exc
            await emit(failure.line)
            data = "" if config.cleanup else await self._keep_failed(build)
            await self._discard(build)
            log.info("image build failed", extra={"image": build.id, "step": failure.line[:200]})
            raise BuildFailed(data)
        except BuildFailed:
            raise
        except BaseException:
            await self._discard(build)
            raise

    # --- before the build container exists ----------------------------------------------------

    async def _plan_pulling(self, dockerfile: Dockerfile, config: ImageBuildConfig, emit: Emit) -> list[_Base]:
        """`_plan`, pulling each FROM image that is not local when the build asks for it."""
        pulled: dict[str, str] = {}  # FROM reference -> the image pulled for it
        while True:
            try:
                return self._plan(dockerfile, config, pulled)
            except _MissingImage as exc:
                if not config.pull or self._pull is None or exc.ref in pulled:
                    raise
                try:
                    pulled[exc.ref] = await self._pull(exc.ref, config, emit)
                except ValueError as failure:
                    raise _SetupFailed(exc.steps, f"error: could not pull image {exc.ref}: {failure}") from None

    def _plan(self, dockerfile: Dockerfile, config: ImageBuildConfig, pulled: dict[str, str] | None = None
              ) -> list[_Base]:
        """Resolve each stage's FROM without side effects; raise `_SetupFailed` naming the steps to show."""
        try:
            parse_nametag(config.tag)
        except KleeneError as exc:
            raise _SetupFailed([], f"error: {exc.message}") from None
        scope = BuildScope(config.buildargs)
        starts = [i for i, instr in enumerate(dockerfile) if isinstance(instr, From)]
        for i in range(starts[0]):
            try:
                dockerfile[i].resolve(scope)
            except ExpansionError as exc:
                raise _SetupFailed(list(range(i + 1)), exc.message) from None
        override = config.container_config.image
        bases: list[_Base] = []
        for k, stage in enumerate(dockerfile.stages):
            steps = [*range(starts[0]), starts[k]]
            if override and k == len(starts) - 1:
                ref = override
            else:
                try:
                    ref = scope.expand_from(stage.from_.image, line=stage.from_.line)
                except ExpansionError as exc:
                    raise _SetupFailed(steps, exc.message) from None
                earlier = dockerfile.stage(ref)
                if earlier is not None and earlier.index < k:
                    bases.append(_Base(root=bases[earlier.index].root, stage=earlier.index))
                    continue
            image, snapshot = self._parent(ref, steps, pulled or {})
            bases.append(_Base(root=image, snapshot=snapshot))
        return bases

    def _parent(self, ref: str, steps: list[int], pulled: dict[str, str]) -> tuple[ImageRecord, str]:
        if (record := self._images.get(pulled.get(ref, ""))) is not None:
            return record, ""
        try:
            base, snapshot = split_snapshot(ref)
            image = self._images.find(base)
        except InvalidReference as exc:
            raise _SetupFailed(steps, f"error: {exc}") from None
        except KleeneError as exc:
            raise _SetupFailed(steps, f"error: {exc.message}") from None
        if image is None:
            raise _MissingImage(steps, ref)
        if snapshot and snapshot not in image.snapshots:
            raise _SetupFailed(steps, f"error: invalid snapshot {snapshot}")
        return image, snapshot

    async def _new_container(self, build: _Build, base: _Base, *, rename: bool = True, name: str = "") -> str:
        """Create a build container on `base`'s image; `rename` names it and connects its networks."""
        cc = build.config.container_config
        try:
            record = await self._containers.create(ContainerConfig(
                image=f"{base.root.id}{base.snapshot}", user=cc.user or "", env=list(cc.env or []),
                mounts=list(cc.mounts or []), jail_param=list(cc.jail_param or []), network_driver=cc.network_driver,
            ))
        except KleeneError as exc:
            raise StepFailed(f"error: {exc.message}") from None
        build.containers.append(record.id)
        if rename:
            await self._prepare_container(build, record.id, name)
        return record.id

    async def _prepare_container(self, build: _Build, container_id: str, name: str) -> None:
        try:
            await self._containers.update(container_id, ContainerUpdate(name=name or f"builder_{container_id}"))
            for net in build.config.networks:
                await self._networks.connect(EndPointConfig(
                    container=container_id, network=net.network, ip_address=net.ip_address,
                    ip_address6=net.ip_address6,
                ))
        except KleeneError as exc:
            raise StepFailed(f"error: {exc.message}") from None

    # --- the build ----------------------------------------------------------------------------

    async def _run(self, build: _Build) -> str:
        dockerfile, runner, quiet = build.dockerfile, build.runner, build.config.quiet
        await self._prepare_container(build, build.id, "")
        stage_no = 0
        for index, instr in enumerate(dockerfile):
            if not quiet:
                await runner.emit(dockerfile.status(index))
            try:
                resolved = instr.resolve(runner.scope)
            except ExpansionError as exc:
                raise StepFailed(exc.message) from None
            snapshot = ""
            if isinstance(resolved, From):
                await self._begin_stage(build, stage_no)
                stage_no += 1
            elif build.current is not None:
                snapshot = await runner.execute(build.current, resolved)
            build.log.append((instr.line, snapshot))
        return await self._finish(build)

    async def _begin_stage(self, build: _Build, k: int) -> None:
        """Start stage `k` in its container, from an image or from an earlier stage's end state."""
        runner, base, cc = build.runner, build.bases[k], build.config.container_config
        if build.current is not None:
            done = build.current
            runner.stages[str(done.index)] = done
            if name := build.dockerfile.stages[done.index].name:
                runner.stages[name] = done
        last = k == len(build.bases) - 1
        container_id = build.id if last else await self._new_container(build, base, name=f"builder_{build.id}_stage{k}")
        if base.stage is not None:
            prev = runner.stages[str(base.stage)]
            stage = Stage(k, container_id, prev.parent_id, list(prev.layers), prev.user, prev.workdir, prev.cmd,
                          prev.entrypoint, list(prev.exposed_ports), dict(prev.labels))
            runner.scope.inherit_env(prev.env)
        else:
            image = base.root
            stage = Stage(k, container_id, image.id, image.layers_at(base.snapshot), cc.user or image.user,
                          image.workdir, image.cmd, image.entrypoint, list(image.exposed_ports), dict(image.labels))
            runner.scope.inherit_env([*image.env, *(cc.env or [])])
        stage.env = runner.scope.env
        build.current = stage
        runner.sync(stage)
        if last and cc.image:
            await runner.emit(PARENT_LINE.format(image=cc.image))

    def _image(self, build: _Build, stage: Stage, *, name: str, tag: str, image_id: str) -> ImageRecord:
        lines = build.log if stage is build.current else []
        return ImageRecord(
            id=image_id, name=name, tag=tag, cmd=stage.cmd, env=list(stage.env), user=stage.user,
            instructions=[[line, snap if snap in stage.snapshots else ""] for line, snap in lines],
            created=now_iso(), dataset=str(self._storage.layer_path(stage.layers[-1])) if stage.layers else "",
            workdir=stage.workdir, entrypoint=stage.entrypoint, exposed_ports=list(stage.exposed_ports),
            labels=dict(stage.labels), layers=list(stage.layers), snapshots=dict(stage.snapshots),
            parent_id=stage.parent_id,
        )

    async def _finish(self, build: _Build) -> str:
        assert build.current is not None
        name, tag = parse_nametag(build.config.tag)
        if build.config.cache:
            self._keep_stages(build)
        self._images.add(self._image(build, build.current, name=name, tag=tag, image_id=build.id))
        log.info("image built", extra={"image": build.id, "layers": len(build.current.layers)})
        await self._discard(build)
        return build.id

    def _keep_stages(self, build: _Build) -> None:
        """With the cache on, earlier stages that made layers stay as untagged images, so that their layers (and
        the cache entries naming them) outlive the build, as Docker's intermediate images; prune removes them."""
        made = build.runner.layers_made
        for key, stage in build.runner.stages.items():
            if key == str(stage.index) and made.intersection(stage.layers):
                self._images.add(self._image(build, stage, name="", tag="", image_id=new_id()))

    async def _keep_failed(self, build: _Build) -> str:
        """Save the failed state as `<name>:failed`; return the data of the closing message."""
        stage = build.current
        if stage is None:
            return ""
        try:
            layer = await self._containers.commit_layer(stage.container_id)  # the failed step's changes
        except (OSError, HostCommandError, KleeneError):
            log.warning("could not keep the changes of a failed build step", extra={"image": build.id},
                        exc_info=True)
        else:
            build.runner.layers_made.add(layer)
            stage.layers.append(layer)
        name, _tag = parse_nametag(build.config.tag)
        self._images.add(self._image(build, stage, name=name, tag="failed", image_id=build.id))
        return stage.last_snapshot or NO_SNAPSHOTS

    async def _discard(self, build: _Build) -> None:
        """Remove the build's containers and scratch filesystems, and its layers that no image stacks.

        Shielded with a deadline: it runs when the client has gone away too. What fails to go is logged.
        """
        with trio.CancelScope(shield=True), trio.move_on_after(DISCARD_DEADLINE):
            for container_id in list(build.containers):
                try:
                    if self._containers.is_running(container_id):
                        await self._containers.stop(container_id, grace=STOP_GRACE)
                    await self._containers.remove(container_id)
                except NotFound:
                    pass
                except Exception:
                    log.warning("could not remove build container %s: it leaked", container_id, exc_info=True)
                build.containers.remove(container_id)
            for scratch in list(build.runner.scratch):
                await self._remove_quietly(self._storage.remove_container_fs, scratch)
            keep = self._images.referenced_layers()
            for layer in sorted(build.runner.layers_made - keep):
                await self._remove_quietly(self._storage.remove_layer, layer)
                build.runner.layers_made.discard(layer)

    @staticmethod
    async def _remove_quietly(remove: Callable[[str], Awaitable[None]], name: str) -> None:
        try:
            await remove(name)
        except (OSError, HostCommandError):
            log.warning("could not remove %s after a build: it leaked", name, exc_info=True)


def _clipped(emit: Emit) -> Emit:
    async def send(text: str) -> None:
        await emit(clip(text))

    return send


def _config_key(config: ImageBuildConfig) -> str:
    """What of the build container's configuration can change a step's result (not the network)."""
    cc = config.container_config
    mounts = [[m.type, m.source, m.destination, m.read_only] for m in cc.mounts or []]
    return cache_key("container", mounts, sorted(cc.jail_param or []))
