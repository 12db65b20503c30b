"""`/images/*`: upstream's routes, statuses and messages, and the `/images/create` WebSocket.

Idents arrive raw in the path (klee does not escape them), so `name:tag` and `id@snap` reach
the handlers as typed; names of pulled images may hold `/` (`127.0.0.1:5000/app:1`), so the
ident is matched by `http.IdentPath`. Every failure of inspect, tag and remove is a 404 with a
message: upstream answers 404 for all of them, and klee only prints messages of the statuses it
knows (a bad reference, upstream's 500, and an ambiguous prefix are 404s here too).
"""

from __future__ import annotations

import logging

import trio
from quart import Blueprint, websocket

from kleene_protocol.models import IdResponse, ImageCreateConfig
from kleene_protocol.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, starting

from ..core.image_create import CreationFailed
from ..core.records import ImageRecord
from .errors import STATUS
from .http import query_bool, query_str, reply, services, statuses
from .ws import close, discard_input, receive_config, ws_guard

log = logging.getLogger(__name__)
bp = Blueprint("images", __name__)

ALWAYS_404 = dict.fromkeys(STATUS, 404)


@bp.get("/images/list")
async def image_list():
    return reply(services().images.list())


@bp.get("/images/<ident:ident>/inspect")
@statuses(ALWAYS_404)
async def image_inspect(ident: str):
    return reply(services().images.inspect(ident))


@bp.delete("/images/<ident:ident>")
@statuses(ALWAYS_404)
async def image_remove(ident: str):
    await services().images.remove(ident)
    return reply(IdResponse(id=ident))  # upstream echoes the ident as given, not the id


@bp.post("/images/prune")
async def image_prune():
    return reply(await services().images.prune(query_bool("all", required=True)))


@bp.post("/images/<ident:ident>/tag")
@statuses(ALWAYS_404)
async def image_tag(ident: str):
    record = services().images.tag(ident, query_str("nametag", required=True))
    return reply(IdResponse(id=record.id))


@bp.websocket("/images/create")
@ws_guard
async def image_create():
    """Config frame -> starting message -> progress text -> close 1000 with the id, or 1011.

    A failure sends its reason as a text frame, then closes 1011 `image creation failed:
    <reason>` (shortened to fit the close frame). A client that goes away cancels this handler
    (quart-trio cancels it on disconnect), and creation removes its partial layer.
    """
    config = await receive_config(ImageCreateConfig)
    await websocket.send(starting())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discard_input)
        image, reason, close_message = await _create(config)
        nursery.cancel_scope.cancel()
    if image is None:
        await websocket.send(reason)
        await close(CLOSE_INTERNAL_ERROR, "error", close_message)
    else:
        await close(CLOSE_NORMAL, "closing", "image created", image.id)


async def _create(config: ImageCreateConfig) -> tuple[ImageRecord | None, str, str]:
    """(image, "", "") or (None, reason, close message).

    Failures become values so that they leave the nursery without an exception group.
    """
    try:
        return await services().images.create(config, websocket.send), "", ""
    except CreationFailed as exc:
        return None, exc.reason, f"image creation failed: {exc.reason}"
    except Exception as exc:  # a bug: the client gets upstream's crash wording, the log the traceback
        log.exception("image creation crashed")
        return None, str(exc), f"image creation crashed: {exc}"
