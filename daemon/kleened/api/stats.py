"""`/containers/stats` (WebSocket) and `GET /containers/{id}/top`: extensions.

stats follows the shape of the other streams (see `ws`): the client's StatsConfig frame, the
starting message, then one TEXT frame per interval, a StatsSample in JSON. Ends: 1000 "end of
stats" (one sample sent without `stream`, or every named container stopped); 1002 "invalid
parameters: ..." (an unknown container, a bad interval) before the starting message.
"""

from __future__ import annotations

import trio
from quart import Blueprint, websocket

from kleene_protocol.codec import encode
from kleene_protocol.models import StatsConfig
from kleene_protocol.websocket import CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, starting

from ..core.errors import KleeneError
from .http import reply, services
from .ws import close, discard_input, receive_config, ws_guard

bp = Blueprint("stats", __name__)


@bp.websocket("/containers/stats")
@ws_guard
async def container_stats():
    config = await receive_config(StatsConfig)
    try:
        samples = services().stats.stream(config.containers, interval=config.interval, stream=config.stream)
    except KleeneError as exc:
        await close(CLOSE_PROTOCOL_ERROR, "error", f"invalid parameters: {exc.message}")
        return
    await websocket.send(starting())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discard_input)
        async for sample in samples:
            await websocket.send(encode(sample).decode())
        nursery.cancel_scope.cancel()
    await close(CLOSE_NORMAL, "closing", "end of stats")


@bp.get("/containers/<ident>/top")
async def container_top(ident: str):
    return reply(services().stats.top(ident))
