"""`commit`: an image of a container's current filesystem, its settings changed by Dockerfile lines.

The container's writable layer becomes a layer of its stack (`Containers.commit_fs`, under the
container's lock, refused while it runs), and the image stacks the same layers, so the image
and the container share them from then on. The image starts from the container's settings
(command, env, user, working directory) and its image's others (entrypoint, ports, labels,
volumes, stop signal, shell, healthcheck); `changes` are decoded by the builder's decoders,
expanded against the image's env as a build would, and applied as the builder applies them.
"""

from __future__ import annotations

import logging

from kleene_protocol.ids import new_id
from kleene_protocol.operations import ContainerCommitConfig

from ..platform.base import Capability, LayerStorage
from .builder.decoders import decode
from .builder.dockerfile import join_workdir
from .builder.instructions import (
    Cmd,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Onbuild,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from .builder.result import image_record
from .builder.scope import BuildScope
from .builder.steps import Stage, apply_setting
from .builder.syntax import logical_lines
from .containers import Containers
from .errors import InvalidArgument, NotFound, Unavailable
from .images import Images, parse_nametag
from .records import ContainerRecord, ImageRecord

log = logging.getLogger(__name__)
CHANGES = (Cmd, Entrypoint, Env, Expose, Healthcheck, Label, Onbuild, Shell, StopSignal, User, Volume, Workdir)
CHANGE_NAMES = "CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, SHELL, STOPSIGNAL, USER, VOLUME, WORKDIR"


def parse_changes(changes: list[str]) -> list[Instruction]:
    """The `--change` lines as instructions; anything but a settings instruction is refused."""
    instructions: list[Instruction] = []
    for text in changes:
        _directives, lines = logical_lines(text)
        for raw in lines:
            instr = decode(raw)
            if not isinstance(instr, CHANGES):
                raise InvalidArgument(f"invalid change '{raw.text}': only {CHANGE_NAMES} can be changed")
            instructions.append(instr)
    return instructions


def _stage(record: ContainerRecord, image: ImageRecord) -> Stage:
    entrypoint = image.entrypoint or []
    cmd = record.cmd
    if entrypoint and cmd is not None and cmd[: len(entrypoint)] == entrypoint:
        cmd = cmd[len(entrypoint):]  # the container's command has the entrypoint in front
    return Stage(index=0, container_id=record.id, parent_id=image.id, layers=list(record.layers),
                 user=record.user, workdir=record.workdir, cmd=cmd, entrypoint=image.entrypoint,
                 exposed_ports=list(image.exposed_ports), labels=dict(image.labels), env=list(record.env),
                 shell=list(image.shell), volumes=list(image.volumes), stop_signal=image.stop_signal,
                 healthcheck=image.healthcheck, onbuild=[])


def apply_changes(stage: Stage, instructions: list[Instruction]) -> None:
    scope = BuildScope()
    scope.begin_stage()
    scope.inherit_env(stage.env)
    for instr in instructions:
        resolved = instr.resolve(scope)
        if isinstance(resolved, Workdir):
            stage.workdir = join_workdir(stage.workdir, resolved.path)
        else:
            apply_setting(stage, resolved)
        stage.env = scope.env


class Commits:
    def __init__(self, containers: Containers, images: Images, storage: LayerStorage) -> None:
        self._containers = containers
        self._images = images
        self._storage = storage

    async def commit(self, ident: str, config: ContainerCommitConfig) -> ImageRecord:
        return await commit(self._containers, self._images, self._storage, ident, config)


async def commit(containers: Containers, images: Images, storage: LayerStorage, ident: str,
                 config: ContainerCommitConfig) -> ImageRecord:
    """Make the image; everything about the request is checked before the filesystem changes."""
    if Capability.SNAPSHOT in storage.capabilities:  # the image would live in the container's dataset
        raise Unavailable(f"commit is not available with the {storage.driver} storage driver: the snapshot "
                          "would stay part of the container's filesystem (docs/freebsd.md)")
    name, tag = parse_nametag(config.tag) if config.tag else ("", "")
    instructions = parse_changes(config.changes)
    before = containers.get(ident, f"no such container '{ident}'")
    image = images.get(before.image_id)
    if image is None:
        raise NotFound(f"the image of container '{ident}' is gone")
    stage = _stage(before, image)
    apply_changes(stage, instructions)  # a bad change fails here, before the commit
    record = await containers.commit_fs(before.id)
    stage = _stage(record, image)
    apply_changes(stage, instructions)
    lines = [(f"COMMIT {record.id}", ""), *((change, "") for change in config.changes)]
    result = image_record(stage, lines=[*((line, "") for line, _ in image.instructions), *lines], name=name,
                          tag=tag, image_id=new_id(), dataset=str(storage.layer_path(record.layers[-1])), labels={})
    images.add(result)
    log.info("image committed", extra={"image": result.id, "container": record.id})
    images.events.publish("image", "commit", result.id, name=result.nametag if name else None, container=record.id)
    return result
