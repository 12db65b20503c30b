"""Helpers for the WebSocket endpoints (exec start, image build, image create).

Every stream follows one shape: the client sends one JSON config frame; the server answers a
JSON starting message, output frames, and a close frame whose reason is a JSON
WebSocketMessage that fits 123 bytes. Errors never send a bare text frame first (the upstream
client crashes on it): they close with a JSON reason directly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import trio
from quart import websocket

from kleene_protocol.codec import BodyError, decode
from kleene_protocol.websocket import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL_ERROR,
    MsgType,
    WindowSize,
    close_reason,
)

from ..logs import REQUEST_ID
from .http import internal_message

log = logging.getLogger(__name__)
T = TypeVar("T")


class ConfigRejected(Exception):
    """The first frame did not decode; the connection has been closed with 1002."""


def frame(stream: int, data: bytes, multiplex: bool) -> bytes:
    """An output frame: the bare bytes, or with `multiplex` a leading stream byte (1 stdout, 2 stderr)."""
    return bytes((stream,)) + data if multiplex else data


CLOSE_LINGER = 5.0  # seconds to wait for the client's close frame (websockets' close_timeout is 10)


async def close(code: int, msg_type: MsgType, message: str, data: str = "") -> None:
    """Close with a JSON reason, then stay until the client answers (at most `CLOSE_LINGER`).

    Returning at once lets hypercorn drop the connection right after our close frame; a client
    whose close reply then fails with EPIPE may lose frames it had already read (websockets'
    sync client discards a whole read's events when its reply cannot be sent). quart-trio
    cancels the handler when the client's close frame arrives.
    """
    await websocket.accept()  # a no-op once accepted; closing unaccepted would answer HTTP 403
    await websocket.close(code, close_reason(msg_type, message, data))
    with trio.move_on_after(CLOSE_LINGER):
        await discard_input()


async def discard_input() -> None:
    """Read and drop client frames: a client that keeps sending must not stall disconnect detection."""
    while True:
        await websocket.receive()


async def receive_config(type_: type[T]) -> T:
    """Read and decode the config frame; on failure close 1002 with upstream's messages."""
    frame = await websocket.receive()
    try:
        return decode(frame, type_)
    except BodyError as exc:
        message = f"invalid json: {exc}" if exc.malformed else f"invalid parameters: {exc}"
        await close(CLOSE_PROTOCOL_ERROR, "error", message)
        raise ConfigRejected(message) from None


def ws_guard(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Close with 1011 and a JSON reason when a handler fails, instead of quart's empty 1000."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except ConfigRejected:
            return None
        except Exception as exc:  # Cancelled is a BaseException and passes through
            log.exception("websocket handler failed")  # the whole message, with the request id
            await close(CLOSE_INTERNAL_ERROR, "error", f"(request {REQUEST_ID.get()}) {internal_message(exc)}")
            return None

    return wrapper


_window_size = msgspec.json.Decoder(WindowSize)


def window_size(frame: str | bytes) -> WindowSize | None:
    """The resize request a client TEXT frame carries, or None when the frame is stdin.

    Only a TEXT frame that decodes as exactly `{"type": "resize", "rows": R, "cols": C}` is a
    resize; everything else a client sends to exec and attach sessions is input.
    """
    if not isinstance(frame, str) or not frame.startswith("{"):
        return None
    try:
        return _window_size.decode(frame)
    except msgspec.DecodeError:
        return None


CONTEXT_END = {"type": "context-end"}


async def binary_upload(error: type[Exception] = ValueError, what: str = "the upload") -> AsyncIterator[bytes]:
    """A client's upload (a build context, an archive): BINARY frames up to an empty one or the
    TEXT frame `{"type":"context-end"}`; any other TEXT frame raises `error`."""
    while True:
        frame = await websocket.receive()
        if not frame:  # quart gives None for an empty frame
            return
        if isinstance(frame, bytes):
            yield frame
            continue
        try:
            ended = msgspec.json.decode(frame) == CONTEXT_END
        except msgspec.DecodeError:
            ended = False
        if not ended:
            raise error(f'unexpected TEXT frame while receiving {what} (end it with an empty BINARY frame or '
                        '{"type":"context-end"})')
        return
