"""`/networks/*`: upstream's routes, statuses and messages.

Statuses: create answers 409 for every validation error; connect answers 404 when the message
says "not found" and 409 otherwise (both upstream). Disconnect answers 404 for its three "not
found" errors where upstream answers 409, because the upstream client prints the message of a
404 but not of a 409 (kleened-api.md §8 pitfall 9).
"""

from __future__ import annotations

from quart import Blueprint

from kleene_protocol.models import EndPointConfig, IdResponse, NetworkConfig

from ..core.errors import InvalidArgument, NotFound
from .http import body, no_content, reply, services, statuses

bp = Blueprint("networks", __name__)


@bp.get("/networks/list")
async def network_list():
    return reply(services().networks.list())


@bp.post("/networks/create")
@statuses({InvalidArgument: 409, NotFound: 409})
async def network_create():
    config = await body(NetworkConfig)
    record = await services().networks.create(config)
    return reply(IdResponse(id=record.id), 201)


@bp.get("/networks/<ident>/inspect")
async def network_inspect(ident: str):
    return reply(services().networks.inspect(ident))


@bp.delete("/networks/<ident>")
async def network_remove(ident: str):
    return reply(IdResponse(id=await services().networks.remove(ident)))


@bp.post("/networks/prune")
async def network_prune():
    return reply(await services().networks.prune())


@bp.post("/networks/connect")
@statuses({InvalidArgument: 409})
async def network_connect():
    config = await body(EndPointConfig)
    await services().networks.connect(config)
    return no_content()


@bp.post("/networks/<network>/disconnect/<container>")
async def network_disconnect(network: str, container: str):
    await services().networks.disconnect(network, container)
    return no_content()
