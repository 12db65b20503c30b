"""Extensions for registries and archives (docs/images.md): `/images/pull`, `/images/push`,
`/images/save` and `/images/load` (WebSockets) and `POST /registries/login`.

The streams follow the other endpoints' shape: the client's config frame, a starting message,
then frames, then a close frame whose reason is a JSON WebSocketMessage. Pull and push send a
`PullProgress` TEXT frame per layer state change; failures send the reason as a TEXT frame and
close 1011 `image pull failed: <reason>` (push, save and load alike). A client that goes away
cancels the handler, and the operation removes what it made.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from quart import Blueprint, websocket

from kleene_protocol.codec import encode
from kleene_protocol.models import IdResponse, ImagePullConfig, ImagePushConfig, PullProgress, RegistryLogin
from kleene_protocol.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, starting

from ..core.errors import InvalidArgument
from ..core.oci.service import OciFailed
from .http import body, reply, services
from .ws import close, discard_input, receive_config, ws_guard

log = logging.getLogger(__name__)
bp = Blueprint("oci", __name__)


async def send_progress(layer: str, status: str, current: int, total: int) -> None:
    await websocket.send(encode(PullProgress(layer=layer, status=status, current=current, total=total)).decode())


async def run_operation(what: str, operation: Callable[[], Awaitable[str]], done: str) -> None:
    """Starting message, the operation (reading client frames meanwhile), then the close frame.

    `operation` returns the close frame's data; an `OciFailed` becomes the reason frame and 1011.
    """
    await websocket.send(starting())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discard_input)  # reading is what notices a client that went away
        try:
            data, reason = await operation(), ""
        except OciFailed as exc:
            data, reason = "", exc.reason
        except Exception as exc:  # a bug: the client gets the message, the log the traceback
            log.exception("image %s crashed", what)
            data, reason = "", f"internal error: {exc}"
        nursery.cancel_scope.cancel()
    if reason:
        await websocket.send(reason)
        await close(CLOSE_INTERNAL_ERROR, "error", f"image {what} failed: {reason}")
    else:
        await close(CLOSE_NORMAL, "closing", done, data)


@bp.websocket("/images/pull")
@ws_guard
async def image_pull():
    """Pull: progress frames, then close 1000 `image pulled` with the image id."""
    config = await receive_config(ImagePullConfig)

    async def operation() -> str:
        return (await services().oci.pull(config, send_progress)).id

    await run_operation("pull", operation, "image pulled")


@bp.websocket("/images/push")
@ws_guard
async def image_push():
    """Push: progress frames, then close 1000 `image pushed` with the manifest digest's hex (the
    whole `sha256:<hex>` does not fit a close frame beside the message)."""
    config = await receive_config(ImagePushConfig)

    async def operation() -> str:
        return (await services().oci.push(config, send_progress)).removeprefix("sha256:")

    await run_operation("push", operation, "image pushed")


@bp.post("/registries/login")
async def registry_login():
    request = await body(RegistryLogin)
    try:
        registry = await services().oci.login(request)
    except OciFailed as exc:
        raise InvalidArgument(f"login to {request.registry or 'the default registry'} failed: {exc.reason}") from None
    return reply(IdResponse(id=registry))
