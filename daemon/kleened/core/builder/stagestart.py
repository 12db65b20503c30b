"""Starting a build stage at its FROM: its build container, the state it inherits, and its parent's ONBUILD triggers.

A stage FROM an image starts with the image's settings (user, workdir, cmd, entrypoint, ports, labels, env, shell,
volumes, stop signal, healthcheck; the build's `--user`/`--env` on top) and, as in Docker, none of its ONBUILD
triggers: those run right after the FROM, in order, as if written there, and are not passed on. A stage FROM an
earlier stage continues from that stage's end state, its ARGs and its own ONBUILD triggers included; on a storage
that clones a container's filesystem at create (ZFS), its container is re-cloned from that stage's top layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..records import ImageRecord
from .dockerfile import DockerfileError, parse_triggers
from .expand import ExpansionError
from .plan import Base
from .steps import Stage, StepFailed

if TYPE_CHECKING:
    from .build import Build

NewContainer = Callable[[Base, str], Awaitable[str]]  # (base, name) -> container id
PARENT_LINE = "Using user-supplied parent image: '{image}'"
TRIGGERS_LINE = "--> Executing {count} build trigger{s} of {image}\n"
TRIGGER_LINE = "--> Trigger: {line}\n"


async def begin_stage(build: Build, k: int, new_container: NewContainer) -> None:
    """Start stage `k` in its container, from an image or from an earlier stage's end state."""
    runner, base, cc = build.runner, build.plan.bases[k], build.config.container_config
    if build.current is not None:
        done = build.current
        runner.stages[str(done.index)] = done
        if name := build.dockerfile.stages[done.index].name:
            runner.stages[name] = done
    last = k == build.plan.last
    container_id = build.id if last else await new_container(base, f"builder_{build.id}_stage{k}")
    if base.stage is not None:
        prev = runner.stages[str(base.stage)]
        stage = _continued(prev, k, container_id)
        await runner.containers.reclone(container_id, stage.layers)
        runner.scope.inherit_env(prev.env)
        runner.scope.inherit_args(prev.args)
    else:
        stage = _from_image(base.root, base.snapshot, k, container_id, cc.user or "")
        runner.scope.inherit_env([*base.root.env, *(cc.env or [])])
    stage.env = runner.scope.env
    build.current = stage
    runner.sync(stage)
    if last and cc.image:
        await runner.emit(PARENT_LINE.format(image=cc.image))
    if base.stage is None and base.root.onbuild:
        await _run_triggers(build, stage, base.root)


def _from_image(image: ImageRecord, snapshot: str, k: int, container_id: str, user: str) -> Stage:
    return Stage(k, container_id, image.id, image.layers_at(snapshot), user or image.user, image.workdir, image.cmd,
                 image.entrypoint, list(image.exposed_ports), dict(image.labels), shell=list(image.shell),
                 volumes=list(image.volumes), stop_signal=image.stop_signal, healthcheck=image.healthcheck)


def _continued(prev: Stage, k: int, container_id: str) -> Stage:
    return Stage(k, container_id, prev.parent_id, list(prev.layers), prev.user, prev.workdir, prev.cmd,
                 prev.entrypoint, list(prev.exposed_ports), dict(prev.labels), shell=list(prev.shell),
                 volumes=list(prev.volumes), stop_signal=prev.stop_signal, healthcheck=prev.healthcheck,
                 onbuild=list(prev.onbuild), args=dict(prev.args))


async def _run_triggers(build: Build, stage: Stage, image: ImageRecord) -> None:
    runner = build.runner
    try:
        triggers = parse_triggers(image.onbuild)
    except DockerfileError as exc:
        raise StepFailed(f"error: an ONBUILD trigger of the parent image is invalid: {exc.message}") from None
    shown = image.nametag if image.name else image.id
    if not runner.quiet:
        await runner.emit(TRIGGERS_LINE.format(count=len(triggers), s="" if len(triggers) == 1 else "s", image=shown))
    for instr in triggers:
        if not runner.quiet:
            await runner.emit(TRIGGER_LINE.format(line=instr.line))
        try:
            resolved = instr.resolve(runner.scope)
        except ExpansionError as exc:
            raise StepFailed(exc.message) from None
        build.log.append((f"ONBUILD {instr.line}", await runner.execute(stage, resolved)))
