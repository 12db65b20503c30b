"""`/containers/*`: upstream's routes, with upstream's statuses where they differ from the table."""

from __future__ import annotations

from quart import Blueprint

from kleene_protocol.models import ContainerConfig, ContainerUpdate, IdResponse

from ..core.errors import Ambiguous, Conflict, InvalidArgument
from .http import body, query_bool, reply, services, statuses

bp = Blueprint("containers", __name__)


@bp.get("/containers/list")
async def container_list():
    return reply(services().containers.list(all_=query_bool("all")))


@bp.post("/containers/create")
@statuses({InvalidArgument: 404})  # upstream answers 404 for every create failure
async def container_create():
    config = await body(ContainerConfig)
    record = await services().containers.create(config)
    return reply(IdResponse(id=record.id), 201)


@bp.get("/containers/<ident>/inspect")
async def container_inspect(ident: str):
    return reply(services().containers.inspect(ident))


@bp.post("/containers/<ident>/update")
async def container_update(ident: str):
    update = await body(ContainerUpdate)
    record = await services().containers.update(ident, update)
    return reply(IdResponse(id=record.id), 201)


@bp.post("/containers/<ident>/stop")
@statuses({Ambiguous: 404, Conflict: 404})
async def container_stop(ident: str):
    return reply(IdResponse(id=await services().containers.stop(ident)))


@bp.delete("/containers/<ident>")
async def container_remove(ident: str):
    removed = await services().containers.remove(ident, volumes=query_bool("volumes"))  # extension: ?volumes=
    return reply(IdResponse(id=removed))


@bp.post("/containers/prune")
async def container_prune():
    return reply(await services().containers.prune())
