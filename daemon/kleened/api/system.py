"""Extensions: `GET /version`, `GET /openapi.json`, and `system info`, `df` and `prune`
(docs/operations.md)."""

from __future__ import annotations

from quart import Blueprint

from kleene_protocol.openapi import openapi_document
from kleene_protocol.operations import SystemPruneConfig

from .http import body, reply, services

bp = Blueprint("system", __name__)


@bp.get("/version")
async def version():
    return reply(services().version)


@bp.get("/openapi.json")
async def openapi():
    return reply(openapi_document())


@bp.get("/system/info")
async def system_info():
    return reply(services().system.info())


@bp.get("/system/df")
async def system_df():
    return reply(await services().system.df())


@bp.post("/system/prune")
async def system_prune():
    config = await body(SystemPruneConfig)
    return reply(await services().system.prune(config))
