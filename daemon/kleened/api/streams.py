"""`/containers/{id}/attach`, `/containers/{id}/logs` and `/events`: WebSocket streams (extensions).

Each has the shape of the other streams (see `ws`): the client's JSON config frame, the JSON
starting message, output frames, and a close frame whose reason is a JSON WebSocketMessage.
Logs are a WebSocket too (not chunked HTTP) so that a follower learns *why* its stream ended,
in the same close reason as every other stream, and klee needs one transport for all of them.

- attach (AttachConfig): starting message with data "tty" when the main process has a
  terminal; BINARY output frames (with `multiplex`, a leading stream byte: 1 stdout, 2 stderr),
  recent lines first. Client frames are stdin, except an exact WindowSize TEXT frame (resize).
  Ends: 1000 "container <id> exited with exit-code N", 1000 "detached from container <id>",
  1011 "reader too slow: dropped", 1011 "error attaching to container" (data: why).
- logs (LogsConfig): BINARY frames, each a stream byte then output. Ends: 1000 "end of log"
  (for a follower: once the container's run ended), 1011 "reader too slow: log rotated away".
- events (EventsConfig): one TEXT frame per Event (JSON). Ends: 1000 "end of events" (`until`
  reached), 1011 "reader too slow: dropped".
Bad parameters close 1002 "invalid parameters: ..." before the starting message.
"""

from __future__ import annotations

import logging

import trio
from quart import Blueprint, websocket

from kleene_protocol.codec import encode
from kleene_protocol.models import AttachConfig, EventsConfig, LogsConfig
from kleene_protocol.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, starting

from ..core.attach import Attachment
from ..core.errors import KleeneError
from ..core.events import EventFilter
from ..core.logs import LogGone
from ..core.stamps import parse_time
from .http import services
from .ws import close, discard_input, frame, receive_config, window_size, ws_guard

log = logging.getLogger(__name__)
bp = Blueprint("streams", __name__)
TOO_SLOW = "reader too slow: dropped"


@bp.websocket("/containers/<ident>/attach")
@ws_guard
async def container_attach(ident: str):
    config = await receive_config(AttachConfig)
    execs = services().execs
    try:
        attachment = execs.attach(ident, recent_lines=config.logs, stdin=config.stdin, detach_keys=config.detach_keys)
    except KleeneError as exc:
        await close(CLOSE_INTERNAL_ERROR, "error", "error attaching to container", exc.message)
        return
    reason = "disconnected"
    try:
        await websocket.send(starting("tty" if attachment.tty else ""))
        reason = await _relay(attachment, config.multiplex)
    finally:
        execs.detach(attachment, reason)
    if reason == "dropped":
        await close(CLOSE_INTERNAL_ERROR, "error", TOO_SLOW)
    elif reason == "detached":
        await close(CLOSE_NORMAL, "closing", f"detached from container {attachment.container_id}")
    else:
        await close(CLOSE_NORMAL, "closing", attachment.exit_message())


async def _relay(attachment: Attachment, multiplex: bool) -> str:
    """Recent lines, then live output, until the process ends (or the client detaches, or it
    is dropped); client frames to stdin meanwhile. Returns why it ended."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_attach_input, attachment)
        for chunk in attachment.recent:
            await websocket.send(frame(*chunk, multiplex))
        while (chunk := await attachment.output.receive()) is not None:
            await websocket.send(frame(*chunk, multiplex))
        if not attachment.detached and not attachment.output.dropped:
            await attachment.run.done.wait()
        nursery.cancel_scope.cancel()
    return "detached" if attachment.detached else "dropped" if attachment.output.dropped else "exited"


async def _attach_input(attachment: Attachment) -> None:
    while True:
        frame = await websocket.receive()
        if (size := window_size(frame)) is not None:
            attachment.resize(size.rows, size.cols)
            continue
        if await attachment.write_stdin(frame.encode() if isinstance(frame, str) else frame):
            attachment.output.close()  # the sender stops after the frame it is sending: never mid-frame
            return


@bp.websocket("/containers/<ident>/logs")
@ws_guard
async def container_logs(ident: str):
    config = await receive_config(LogsConfig)
    containers = services().containers
    try:
        record = containers.get(ident)
        reader = containers.logs.stream(record.id, config)
    except KleeneError as exc:
        await close(CLOSE_PROTOCOL_ERROR, "error", f"invalid parameters: {exc.message}")
        return
    gone = False
    try:
        await reader.open()
        await websocket.send(starting())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discard_input)
            try:
                while frames := await reader.read():
                    for frame in frames:
                        await websocket.send(frame)
            except LogGone:
                gone = True
            nursery.cancel_scope.cancel()
    finally:
        reader.close()
    if gone:
        await close(CLOSE_INTERNAL_ERROR, "error", "reader too slow: log rotated away")
    else:
        await close(CLOSE_NORMAL, "closing", "end of log")


@bp.websocket("/events")
@ws_guard
async def events():
    config = await receive_config(EventsConfig)
    bus = services().events
    try:
        event_filter = EventFilter.parse(config.filters, since_ns=parse_time(config.since, "since"),
                                         until_ns=parse_time(config.until, "until"))
    except KleeneError as exc:
        await close(CLOSE_PROTOCOL_ERROR, "error", f"invalid parameters: {exc.message}")
        return
    subscription = bus.subscribe(event_filter)
    try:
        await websocket.send(starting())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discard_input)
            while (event := await subscription.receive()) is not None:
                await websocket.send(encode(event).decode())
            nursery.cancel_scope.cancel()
    finally:
        bus.unsubscribe(subscription)
    if subscription.dropped:
        await close(CLOSE_INTERNAL_ERROR, "error", TOO_SLOW)
    else:
        await close(CLOSE_NORMAL, "closing", "end of events")
