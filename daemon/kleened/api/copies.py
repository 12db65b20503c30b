"""`cp` and `commit` (extensions, docs/operations.md): a container path's stat over REST, its tar
stream over WebSockets in both directions (the streams' usual shape, see `ws`), and
`POST /containers/<id>/commit` (ContainerCommitConfig -> 201 IdResponse).

- `GET /containers/<id>/archive/stat?path=P[&follow_link=true]`: a `PathStat`, or 404 (no container, nothing at P),
  409 (the container is starting, stopping or going), 422 (no path).
- `/containers/<id>/archive/get` (ArchiveGetConfig): starting message whose data is the
  `PathStat` as JSON, BINARY frames of the tar, close 1000 `archive sent`.
- `/containers/<id>/archive/put` (ArchivePutConfig): starting message, then the client's tar in
  BINARY frames ended by an empty frame (or `{"type":"context-end"}`); close 1000 `archive
  extracted` (data: `ArchivePutResult` JSON).
What fails before the starting message closes 1002 with the reason; a failure midway 1011.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import trio
from quart import Blueprint, websocket

from kleene_protocol.codec import encode
from kleene_protocol.models import IdResponse
from kleene_protocol.operations import ArchiveGetConfig, ArchivePutConfig, ContainerCommitConfig
from kleene_protocol.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, starting

from ..core.errors import KleeneError
from .http import body, query_bool, query_str, reply, services
from .ws import binary_upload, close, discard_input, receive_config, ws_guard

bp = Blueprint("copies", __name__)


@bp.post("/containers/<ident>/commit")
async def container_commit(ident: str):
    """`commit`: 201 with the new image's id; 404 (no container), 409 (running), 422/400 (bad tag, change)."""
    config = await body(ContainerCommitConfig)
    record = await services().commits.commit(ident, config)
    return reply(IdResponse(id=record.id), 201)


@bp.get("/containers/<ident>/archive/stat")
async def archive_stat(ident: str):
    path = query_str("path", required=True)
    return reply(await services().copies.stat(ident, path, follow=query_bool("follow_link")))


class _Upload(KleeneError):
    """A client that breaks the upload's framing."""


@bp.websocket("/containers/<ident>/archive/get")
@ws_guard
async def archive_get(ident: str):
    config = await receive_config(ArchiveGetConfig)

    async def run(started: Callable[[str], Awaitable[None]]) -> str:
        async with services().copies.read(ident, config.path, follow=config.follow_link) as (info, chunks):
            await started(encode(info).decode())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(discard_input)  # reading is what notices a client that went away
                async for chunk in chunks:
                    await websocket.send(chunk)
                nursery.cancel_scope.cancel()
        return ""

    await _stream(run, "archive sent")


@bp.websocket("/containers/<ident>/archive/put")
@ws_guard
async def archive_put(ident: str):
    config = await receive_config(ArchivePutConfig)

    async def run(started: Callable[[str], Awaitable[None]]) -> str:
        async def upload() -> AsyncIterator[bytes]:
            await started("")  # the client sends once it is told the destination is there
            async for chunk in binary_upload(_Upload, "the archive"):
                yield chunk

        result = await services().copies.write(ident, config.path, upload())
        return encode(result).decode()

    await _stream(run, "archive extracted")


async def _stream(run: Callable[[Callable[[str], Awaitable[None]]], Awaitable[str]], done: str) -> None:
    """Run `run(started)`, then close: 1000 `done`, or the error (1002 before `started`, 1011 after)."""
    sent = False

    async def started(data: str) -> None:
        nonlocal sent
        await websocket.send(starting(data))
        sent = True

    failure: KleeneError | None = None
    try:
        data = await run(started)
    except* KleeneError as group:  # a group when it left a nursery
        failure = group.exceptions[0]  # type: ignore[assignment]
    if failure is not None:
        await close(CLOSE_INTERNAL_ERROR if sent else CLOSE_PROTOCOL_ERROR, "error", failure.message)
    else:
        await close(CLOSE_NORMAL, "closing", done, data)
