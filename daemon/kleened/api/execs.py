"""`/exec/*`: create, the `/exec/start` WebSocket, stop.

The start stream: the client's config frame; for an attached start, the JSON starting message,
the process's output as BINARY frames (exact bytes; the upstream client echoes them), and a
close 1000 whose JSON reason carries the exit code. A detached start closes 1001 at once.
Errors close 1011 with the reason in `data` and no text frame before (the upstream client
crashes on a non-JSON first frame). Client frames after the start are stdin, except a TEXT
frame that is exactly `{"type": "resize", "rows": R, "cols": C}` (extension). With `multiplex`
in the config (extension) every output frame starts with its stream byte (1 stdout, 2 stderr).
"""

from __future__ import annotations

import logging

import trio
from quart import Blueprint, websocket

from kleene_protocol.models import ExecConfig, ExecStartConfig, IdResponse
from kleene_protocol.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    starting,
)

from ..core.errors import ExecFailed, KleeneError
from ..core.execs import Session
from ..core.fanout import Stream
from .http import body, query_bool, reply, services
from .ws import close, frame, receive_config, window_size, ws_guard

log = logging.getLogger(__name__)
bp = Blueprint("execs", __name__)


@bp.post("/exec/create")
async def exec_create():
    config = await body(ExecConfig)
    return reply(IdResponse(id=services().execs.create(config).id), 201)


@bp.post("/exec/<exec_id>/stop")
async def exec_stop(exec_id: str):
    force = query_bool("force_stop", required=True)
    stop_container = query_bool("stop_container", required=True)
    await services().execs.stop(exec_id, force=force, stop_container=stop_container)
    return reply(IdResponse(id=exec_id))


@bp.websocket("/exec/start")
@ws_guard
async def exec_start():
    config = await receive_config(ExecStartConfig)
    execs = services().execs
    try:
        session = await execs.start(config.exec_id, attach=config.attach, start_container=config.start_container)
    except ExecFailed as exc:
        if config.attach:  # as a shell reports it: the reason, then the exit code 127 or 126
            await websocket.send(starting())
            await websocket.send(frame(Stream.STDERR, f"{exc.message}\n".encode(), config.multiplex))
            await close(CLOSE_NORMAL, "closing", f"{config.exec_id} has exited with exit-code {exc.exit_code}")
        else:
            await close(CLOSE_INTERNAL_ERROR, "error", "error starting exec instance", exc.message)
        return
    except KleeneError as exc:
        await close(CLOSE_INTERNAL_ERROR, "error", "error starting exec instance", exc.message)
        return
    if not config.attach:
        await close(CLOSE_GOING_AWAY, "closing", "succesfully started execution instance in detached mode")
        return
    await websocket.send(starting())
    try:
        await _relay(session, config.multiplex)
    finally:
        with trio.CancelScope(shield=True):
            await execs.interrupt(session)
    await close(CLOSE_NORMAL, "closing", session.closing_message())


async def _relay(session: Session, multiplex: bool) -> None:
    """Output to the client until the process ends; client frames to its stdin meanwhile."""
    assert session.output is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_client_input, session)
        async with session.output:
            async for stream, data in session.output:
                await websocket.send(frame(stream, data, multiplex))
        await session.run.done.wait()
        nursery.cancel_scope.cancel()


async def _client_input(session: Session) -> None:
    while True:
        frame = await websocket.receive()
        if (size := window_size(frame)) is not None:
            session.resize(size.rows, size.cols)
        else:
            await session.write_stdin(frame.encode() if isinstance(frame, str) else frame)


