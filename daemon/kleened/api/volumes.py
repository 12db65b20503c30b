"""`/volumes/*`: exactly upstream's routes, statuses and messages."""

from __future__ import annotations

from quart import Blueprint

from kleene_protocol.models import IdResponse, VolumeConfig

from .http import body, reply, services

bp = Blueprint("volumes", __name__)


@bp.get("/volumes/list")
async def volume_list():
    return reply(services().volumes.list())


@bp.post("/volumes/create")
async def volume_create():
    config = await body(VolumeConfig)
    volume = await services().volumes.create(config.name)
    return reply(IdResponse(id=volume.name), 201)


@bp.get("/volumes/<name>/inspect")
async def volume_inspect(name: str):
    return reply(services().volumes.inspect(name))


@bp.delete("/volumes/<name>")
async def volume_remove(name: str):
    await services().volumes.remove(name)
    return reply(IdResponse(id=name))


@bp.post("/volumes/prune")
async def volume_prune():
    return reply(await services().volumes.prune())
