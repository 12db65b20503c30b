"""Extensions: `GET /version` and `GET /openapi.json`."""

from __future__ import annotations

from quart import Blueprint

from kleene_protocol.openapi import openapi_document

from .http import reply, services

bp = Blueprint("system", __name__)


@bp.get("/version")
async def version():
    return reply(services().version)


@bp.get("/openapi.json")
async def openapi():
    return reply(openapi_document())
