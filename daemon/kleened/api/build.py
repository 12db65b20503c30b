"""`GET /images/build`: the build WebSocket (kleened-api.md §4.3).

Frames: the client's `ImageBuildConfig`; with `context_upload` (extension) the context as a tar stream in BINARY
frames, ended by an empty BINARY frame or the TEXT frame `{"type":"context-end"}`; then the server's starting
message (data: the image id), TEXT log frames (upstream klee tests `"..." in frame`, which fails on bytes), and a
close frame: 1000 `image created` (data: id), 1011 `image build failed` (data: last snapshot, `no snapshots
available` or ""), or, for a Dockerfile that cannot be processed, a starting message with data "", the error text
and 1011 `failed to process Dockerfile`. An invalid config closes 1002 (`ws.receive_config`). A client that goes
away cancels the handler, and the build removes everything it made.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import trio
from quart import Blueprint, websocket

from kleene_protocol.models import BuildPrune, ImageBuildConfig
from kleene_protocol.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, starting

from ..core.builder.build import BuildFailed, clip
from ..core.builder.context import ContextError
from ..core.builder.dockerfile import DockerfileError
from .http import reply, services
from .ws import binary_upload, close, discard_input, receive_config, ws_guard

log = logging.getLogger(__name__)
bp = Blueprint("build", __name__)

@bp.websocket("/images/build")
@ws_guard
async def image_build():
    config = await receive_config(ImageBuildConfig)
    async with contextlib.AsyncExitStack() as stack:
        if config.context_upload:
            try:
                context = await stack.enter_async_context(services().builds.uploaded_context(
                    binary_upload(ContextError, "the build context")))
            except ContextError as exc:
                await websocket.send(starting())
                await websocket.send(f"error: {exc}")
                await close(CLOSE_INTERNAL_ERROR, "error", "failed to receive the build context")
                return
        else:
            context = Path(config.context)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discard_input)  # reading is what notices a client that went away
            outcome = await _build(config, context)
            nursery.cancel_scope.cancel()
    await close(*outcome)


@bp.post("/build/prune")
async def build_prune():
    """Extension: remove the RUN cache mounts no build uses now."""
    pruned = await services().builds.prune_cache_mounts()
    return reply(BuildPrune(cache_mounts=[i for i, _ in pruned], bytes_reclaimed=sum(b for _, b in pruned)))


async def _build(config: ImageBuildConfig, context: Path) -> tuple[int, str, str, str]:
    """The close frame's (code, type, message, data). Failures become values, so that they leave the nursery
    without an exception group."""
    try:
        image_id = await services().builds.build(config, context, started=_started, emit=websocket.send)
    except DockerfileError as exc:
        await websocket.send(starting())
        await websocket.send(clip(exc.message))
        return CLOSE_INTERNAL_ERROR, "error", "failed to process Dockerfile", ""
    except BuildFailed as exc:
        return CLOSE_INTERNAL_ERROR, "error", "image build failed", exc.data
    return CLOSE_NORMAL, "closing", "image created", image_id


async def _started(image_id: str) -> None:
    await websocket.send(starting(image_id))
