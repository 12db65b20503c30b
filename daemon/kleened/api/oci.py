"""Extensions for registries and archives (docs/images.md): `/images/pull`, `/images/push`,
`/images/save` and `/images/load` (WebSockets) and `POST /registries/login`.

The streams follow the other endpoints' shape: the client's config frame, a starting message,
then frames, then a close frame whose reason is a JSON WebSocketMessage. Pull and push send a
`PullProgress` TEXT frame per layer state change; failures send the reason as a TEXT frame and
close 1011 `image pull failed: <reason>` (push, save and load alike). A client that goes away
cancels the handler, and the operation removes what it made.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable

import trio
from quart import Blueprint, websocket

from kleene_protocol.codec import encode
from kleene_protocol.models import (
    IdResponse,
    ImageLoadConfig,
    ImagePullConfig,
    ImagePushConfig,
    ImageSaveConfig,
    PullProgress,
    RegistryLogin,
)
from kleene_protocol.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, starting

from ..core.errors import InvalidArgument
from ..core.oci.pull import Flusher
from ..core.oci.service import OciFailed
from .http import body, reply, services
from .ws import binary_upload, close, discard_input, receive_config, ws_guard

log = logging.getLogger(__name__)
bp = Blueprint("oci", __name__)


class ProgressFrames(Flusher):
    """`PullProgress` frames sent by a task of their own, so a slow client never slows a transfer.

    Every status change is sent, in order; byte counts ("Downloading" 1 MiB, 2 MiB, ...) of a
    layer whose status has not changed are coalesced to the latest when the client falls behind.
    """

    BYTES = frozenset({"Downloading", "Extracting", "Pushing"})

    def __init__(self) -> None:
        super().__init__()
        self._changes: collections.deque[PullProgress] = collections.deque()
        self._latest: dict[str, PullProgress] = {}
        self._status: dict[str, str] = {}

    async def __call__(self, layer: str, status: str, current: int, total: int) -> None:
        frame = PullProgress(layer=layer, status=status, current=current, total=total)
        if status in self.BYTES and self._status.get(layer) == status:
            self._latest[layer] = frame
        else:
            self._latest.pop(layer, None)
            self._changes.append(frame)
            self._status[layer] = status
        self.wake()

    async def flush(self) -> None:
        while self._changes or self._latest:
            frame = self._changes.popleft() if self._changes else self._latest.pop(next(iter(self._latest)))
            await websocket.send(encode(frame).decode())


async def run_operation(what: str, operation: Callable[[], Awaitable[str]], done: str, *,
                        read_client: bool = True, progress: ProgressFrames | None = None) -> None:
    """Starting message, the operation, then the close frame.

    Client frames are read and dropped meanwhile (`read_client`), which is what notices a client
    that went away, unless the operation reads them itself. `operation` returns the close frame's
    data; an `OciFailed` becomes the reason frame and 1011.
    """
    await websocket.send(starting())
    async with trio.open_nursery() as nursery:
        if read_client:
            nursery.start_soon(discard_input)
        if progress is not None:
            nursery.start_soon(progress.run)
        try:
            data, reason = await operation(), ""
            if progress is not None:
                await progress.flush()
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
    progress = ProgressFrames()

    async def operation() -> str:
        return (await services().oci.pull(config, progress)).id

    await run_operation("pull", operation, "image pulled", progress=progress)


@bp.websocket("/images/push")
@ws_guard
async def image_push():
    """Push: progress frames, then close 1000 `image pushed` with the manifest digest's hex (the
    whole `sha256:<hex>` does not fit a close frame beside the message)."""
    config = await receive_config(ImagePushConfig)
    progress = ProgressFrames()

    async def operation() -> str:
        return (await services().oci.push(config, progress)).removeprefix("sha256:")

    await run_operation("push", operation, "image pushed", progress=progress)


FRAME = 256 * 1024  # bytes per BINARY frame of a saved archive


@bp.websocket("/images/save")
@ws_guard
async def image_save():
    """Save: the archive in BINARY frames of at most 256 KiB, then close 1000 `image saved`."""
    config = await receive_config(ImageSaveConfig)
    pending = bytearray()

    async def send(data: bytes) -> None:
        pending.extend(data)
        while len(pending) >= FRAME:
            await websocket.send(bytes(pending[:FRAME]))
            del pending[:FRAME]

    async def operation() -> str:
        await services().oci.save(config, send)
        if pending:
            await websocket.send(bytes(pending))
        return ""

    await run_operation("save", operation, "image saved")


@bp.websocket("/images/load")
@ws_guard
async def image_load():
    """Load: the client's config frame, then the archive in BINARY frames ended by an empty one; the
    server answers a starting message, a line per layer, `Loaded image: <name:tag> (<id>)` per image,
    then close 1000 `images loaded` with the ids, comma-separated (when they fit a close frame)."""
    config = await receive_config(ImageLoadConfig)

    async def operation() -> str:
        records = await services().oci.load(config, binary_upload(OciFailed, "the archive"), websocket.send)
        ids = ",".join(record.id for record in records)
        return ids if len(ids) <= 64 else ""

    await run_operation("load", operation, "images loaded", read_client=False)


@bp.post("/registries/login")
async def registry_login():
    request = await body(RegistryLogin)
    try:
        registry = await services().oci.login(request)
    except OciFailed as exc:
        raise InvalidArgument(f"login to {request.registry or 'the default registry'} failed: {exc.reason}") from None
    return reply(IdResponse(id=registry))
