"""Image builds (`GET /images/build`): a Dockerfile and a context in, an image out, the log streamed as text.

Flow (upstream's, kleened-api.md §4.3):
1. read and parse the Dockerfile, check the request (secrets, platform, target); a failure is a `DockerfileError`
   and nothing has been created;
2. plan (`plan`): the stages the target needs, each one's FROM resolved (meta ARGs only, `container_config.image`
   replacing the target stage's FROM); an unknown image or snapshot fails the build with
   `error: could not find image X` before anything exists;
3. create the build container of the target stage, `builder_<id>`: its id is the build's id, sent as the starting
   message; earlier stages get containers `builder_<id>_stage<n>` when they start;
4. run the instructions in order, `Step n/N : <line>` before each (not when quiet) and
   `--> Snapshot created: @<12hex>` after each RUN, COPY and ADD (always); after a FROM of an image with ONBUILD
   triggers, the triggers;
5. store the image: the target stage's layers, snapshots and settings, `instructions` = `[line, snapshot or ""]` per
   line, `parent_id` = the image the stage started from; or, when an identical image exists (an unchanged rebuild
   with the cache), return that one and move the tag to it (`result`); then remove the build containers and every
   layer the build made that no image stacks.

A step that fails ends the build with `BuildFailed(data)`: with `cleanup` everything is removed and data is "";
without, the failed state (the failed step's changes included, unless they held a secret) is kept as the image
`<name>:failed` with the build's id, and data is its last snapshot or `no snapshots available`. Anything else that
ends the build (the client went away and the handler was cancelled, a bug) removes everything it created, shielded,
before it propagates.
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

from ...platform.base import BuildFiles, Capability, HostCommandError, LayerStorage
from ..containers import Containers
from ..errors import KleeneError, NotFound
from ..images import Images, parse_nametag
from ..networks import Networks
from ..records import ImageRecord
from ..store import Store
from .cache import BuildCache, cache_key
from .cachemounts import CacheMounts
from .context import read_dockerfile, read_ignore, uploaded_context
from .dockerfile import Dockerfile, DockerfileError, From
from .expand import ExpansionError, Syntax
from .plan import Base, MissingImage, Plan, PulledFirst, SetupFailed, make_plan, platform_mismatch
from .result import image_record, same_image
from .runmounts import RunHost
from .scope import BuildScope, platform_args
from .secrets import SecretError, check_secrets
from .stagestart import begin_stage
from .steps import Stage, StepFailed, StepRunner

log = logging.getLogger(__name__)

Emit = Callable[[str], Awaitable[None]]
NO_SNAPSHOTS = "no snapshots available"
MAX_LINE = 64 * 1024  # characters of one log frame: Step and error lines quote Dockerfile lines of any length,
# and upstream klee refuses frames over 1 MiB
STOP_GRACE = 1.0  # seconds between TERM and KILL for a build container of a cancelled build
DISCARD_DEADLINE = 120.0  # seconds for removing what a failed or cancelled build made
SYNTAX_LINE = "--> # syntax={syntax} is ignored: kleened builds Dockerfiles with its own parser\n"


def clip(text: str) -> str:
    """`text`, shortened to `MAX_LINE` characters."""
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


class BuildFailed(Exception):
    """The build failed after its starting message; `data` goes into the closing message."""

    def __init__(self, data: str) -> None:
        super().__init__(data)
        self.data = data


# A FROM image that is not local, pulled when the build asks for it (`ImageBuildConfig.pull`):
# `(reference, config, emit)` -> the image; raises `ValueError` with the reason it could not be pulled.
PullHook = Callable[[str, ImageBuildConfig, Emit], Awaitable[ImageRecord]]


@dataclass(eq=False)
class Build:
    id: str
    config: ImageBuildConfig
    dockerfile: Dockerfile
    plan: Plan
    runner: StepRunner
    containers: list[str] = field(default_factory=list)  # created and not yet removed, in creation order
    current: Stage | None = None
    log: list[tuple[str, str]] = field(default_factory=list)  # (line, snapshot) per instruction run


class Builder:
    """The build service. `files` is the host driver for COPY and uploads, `host` for RUN mounts and downloads;
    uploads unpack below `tmp_dir`; `platform` is the host's `os/arch[/variant]`, the only one builds target."""

    def __init__(self, *, store: Store, images: Images, containers: Containers, networks: Networks,
                 storage: LayerStorage, files: BuildFiles, tmp_dir: Path, host: RunHost | None = None,
                 platform: str = "linux/amd64", pull: PullHook | None = None) -> None:
        self._images = images
        self._pull = pull
        self._containers = containers
        self._networks = networks
        self._storage = storage
        self._files = files
        self._tmp_dir = tmp_dir
        self._host = host
        self.platform = platform
        self._cache = BuildCache(store, self._image_layers, lambda layer: storage.layer_path(layer).is_dir())
        self.cache_mounts = CacheMounts(store, host) if host is not None else None

    def _caching(self, config: ImageBuildConfig) -> bool:
        """The build cache reuses layers by stacking them; a storage whose steps are snapshots of one
        filesystem (ZFS) cannot stack another build's snapshot, so it builds without."""
        return config.cache and Capability.SNAPSHOT not in self._storage.capabilities

    def _image_layers(self) -> set[str]:
        return {layer for record in self._images.records() for layer in record.layers}

    def uploaded_context(self, chunks: AsyncIterator[bytes]) -> contextlib.AbstractAsyncContextManager[Path]:
        """A context received as a tar stream, for the duration of the block (see `context.uploaded_context`)."""
        return uploaded_context(chunks, tmp_dir=self._tmp_dir, files=self._files)

    def _scope(self, config: ImageBuildConfig, dockerfile: Dockerfile) -> BuildScope:
        os_name, arch, *variant = self.platform.split("/")
        try:
            scope = BuildScope(config.buildargs, automatic=platform_args(os_name, arch, *variant))
        except ExpansionError as exc:
            raise DockerfileError(exc.message) from None
        scope.syntax = Syntax(escape=dockerfile.directives.escape)
        return scope

    def _check(self, config: ImageBuildConfig) -> None:
        """The request's own fields, before anything is made. Raises `DockerfileError`."""
        try:
            check_secrets(config.secrets)
        except SecretError as exc:
            raise DockerfileError(f"error: {exc}") from None
        if config.platform and (reason := platform_mismatch(config.platform, self.platform)):
            raise DockerfileError(f"error: --platform={config.platform}: {reason}")

    async def build(self, config: ImageBuildConfig, context: Path, *, started: Emit, emit: Emit) -> str:
        """Build by `config` from `context`; return the image id.

        `started(id)` is called once, before any other output; `emit(text)` sends a log frame. Raises
        `DockerfileError` (before `started`) and `BuildFailed`; cancellation propagates after the cleanup.
        """
        dockerfile = read_dockerfile(context, config.dockerfile)
        self._check(config)
        emit = _clipped(emit)
        runner = StepRunner(
            containers=self._containers, images=self._images, storage=self._storage, files=self._files,
            scope=self._scope(config, dockerfile), emit=emit, quiet=config.quiet, context=context,
            ignore=read_ignore(context), config_key=_config_key(config),
            cache=self._cache if self._caching(config) else None,
            host=self._host, cache_mounts=self.cache_mounts, secrets=dict(config.secrets),
        )
        try:
            plan = await self._plan_pulling(dockerfile, config, emit)
            build = Build(id="", config=config, dockerfile=dockerfile, plan=plan, runner=runner)
            try:
                build.id = runner.build_id = await self._new_container(build, plan.bases[plan.last], rename=False)
            except StepFailed as exc:
                raise SetupFailed([], exc.line) from None
        except SetupFailed as exc:
            await started(new_id())  # upstream's id for a build that never got a container
            for line in [] if config.quiet else exc.shown:
                await emit(line)
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

    async def _plan_pulling(self, dockerfile: Dockerfile, config: ImageBuildConfig, emit: Emit) -> Plan:
        """`make_plan`, pulling each FROM image that is not local when the build asks for it."""
        finder = PulledFirst(self._images)
        while True:
            try:
                return make_plan(dockerfile, config, self._scope(config, dockerfile), finder, self.platform)
            except MissingImage as exc:
                base = exc.ref.split("@")[0]
                if not config.pull or self._pull is None or base in finder.pulled:
                    raise
                try:
                    finder.pulled[base] = await self._pull(exc.ref, config, emit)
                except ValueError as failure:
                    raise SetupFailed(exc.shown, f"error: could not pull image {exc.ref}: {failure}") from None

    async def _new_container(self, build: Build, base: Base, *, rename: bool = True, name: str = "") -> str:
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

    def _stage_container(self, build: Build) -> Callable[[Base, str], Awaitable[str]]:
        async def create(base: Base, name: str) -> str:
            return await self._new_container(build, base, name=name)

        return create

    async def _prepare_container(self, build: Build, container_id: str, name: str) -> None:
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

    async def _run(self, build: Build) -> str:
        dockerfile, runner, quiet = build.dockerfile, build.runner, build.config.quiet
        await self._prepare_container(build, build.id, "")
        if dockerfile.directives.syntax and not quiet:
            await runner.emit(SYNTAX_LINE.format(syntax=dockerfile.directives.syntax))
        for n, index in enumerate(build.plan.steps):
            instr = dockerfile[index]
            if not quiet:
                await runner.emit(build.plan.status(dockerfile, n))
            try:
                resolved = instr.resolve(runner.scope)
            except ExpansionError as exc:
                raise StepFailed(exc.message) from None
            if isinstance(resolved, From):
                build.log.append((instr.line, ""))
                await begin_stage(build, dockerfile.stage_at(index), self._stage_container(build))
            elif build.current is not None:
                build.log.append((instr.line, await runner.execute(build.current, resolved)))
            else:
                build.log.append((instr.line, ""))
        return await self._finish(build)

    async def _finish(self, build: Build) -> str:
        assert build.current is not None
        name, tag = parse_nametag(build.config.tag)
        if self._caching(build.config):
            self._keep_stages(build)
        record = self._image(build, build.current, name=name, tag=tag, image_id=build.id)
        existing = same_image(self._images.records(), record) if self._caching(build.config) else None
        if existing is None:
            await self._storage.finish_build(build.current.container_id, record.id)
            self._images.add(record)
        elif name and existing.nametag != record.nametag:
            self._images.tag(existing.id, record.nametag)  # the tag moves to the image, as in Docker
        image_id = record.id if existing is None else existing.id
        log.info("image built", extra={"image": image_id, "layers": len(build.current.layers),
                                       "reused": existing is not None})
        await self._discard(build)
        return image_id

    def _image(self, build: Build, stage: Stage, *, name: str, tag: str, image_id: str) -> ImageRecord:
        dataset = str(self._storage.layer_path(stage.layers[-1])) if stage.layers else ""
        return image_record(stage, lines=build.log if stage is build.current else [], name=name, tag=tag,
                            image_id=image_id, dataset=dataset,
                            labels=dict(build.config.labels) if stage is build.current else {})

    def _keep_stages(self, build: Build) -> None:
        """With the cache on, earlier stages that made layers stay as untagged images, so that their layers (and
        the cache entries naming them) outlive the build, as Docker's intermediate images; prune removes them."""
        made = build.runner.layers_made
        for key, stage in build.runner.stages.items():
            if key == str(stage.index) and made.intersection(stage.layers):
                self._images.add(self._image(build, stage, name="", tag="", image_id=new_id()))

    async def _keep_failed(self, build: Build) -> str:
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
        await self._storage.finish_build(stage.container_id, build.id)
        self._images.add(self._image(build, stage, name=name, tag="failed", image_id=build.id))
        return stage.last_snapshot or NO_SNAPSHOTS

    async def _discard(self, build: Build) -> None:
        """Remove the build's containers, scratch filesystems and directory, and its layers that no image stacks.

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
            for scratch in list(build.runner.scratch_fs):
                await self._remove_quietly(self._storage.remove_container_fs, scratch)
            if build.runner.scratch_path is not None and self._host is not None:
                await trio.to_thread.run_sync(self._host.remove_tree, build.runner.scratch_path)
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

    async def reconcile(self) -> None:
        """At start-up: remove the scratch directories and stray cache mounts a killed daemon left."""
        if self._host is None or self.cache_mounts is None:
            return
        stale = await trio.to_thread.run_sync(self._host.clear_scratch)
        if stale:
            log.warning("removed %d build scratch directories a previous daemon left", len(stale))
        await self.cache_mounts.reconcile()

    async def prune_cache_mounts(self) -> list[tuple[str, int]]:
        """`POST /build/prune`: remove the RUN cache mounts no build uses; `(id, bytes)` of each, oldest first."""
        if self.cache_mounts is None:
            return []
        return [(c.id, c.bytes) for c in await self.cache_mounts.prune()]


def _clipped(emit: Emit) -> Emit:
    async def send(text: str) -> None:
        await emit(clip(text))

    return send


def _config_key(config: ImageBuildConfig) -> str:
    """What of the build container's configuration can change a step's result (not the network)."""
    cc = config.container_config
    mounts = [[m.type, m.source, m.destination, m.read_only] for m in cc.mounts or []]
    return cache_key("container", mounts, sorted(cc.jail_param or []))
