"""Request decoding and response encoding helpers shared by the REST handlers."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import Response, current_app, request
from werkzeug.routing import PathConverter

from kleene_protocol.codec import BodyError, decode, encode
from kleene_protocol.models import ErrorResponse

from ..core.errors import KleeneError
from ..core.services import Services
from .errors import status_for

T = TypeVar("T")
JSON = "application/json"


class IdentPath(PathConverter):
    """A path parameter that may hold `/` (pulled images' names: `host:5000/team/app:1`) and any
    other character, newlines included (werkzeug's `path` stops at a newline, so such an ident
    would miss its route and get the plain-text 404 of unknown routes)."""

    regex = r"(?s:[^/].*?)"


def services() -> Services:
    return current_app.config["KLEENE_SERVICES"]


def reply(obj: Any, status: int = 200) -> Response:
    return Response(encode(obj), status=status, content_type=JSON)


def error_reply(message: str, status: int) -> Response:
    return reply(ErrorResponse(message=message), status)


def internal_message(exc: BaseException) -> str:
    """An unexpected error, whole: its type when it has no text of its own."""
    return f"internal error: {exc}" if str(exc) else f"internal error: {type(exc).__name__}"


def no_content() -> Response:
    return Response(b"", status=204)


class ValidationFailed(Exception):
    """A body or query that does not decode: answered 422 with a readable message."""

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.pointer = pointer


async def body(type_: type[T]) -> T:
    raw = await request.get_data(cache=False)
    try:
        return decode(raw or b"{}", type_)
    except BodyError as exc:
        prefix = "invalid json" if exc.malformed else "invalid request body"
        raise ValidationFailed(f"{prefix}: {exc}") from None


def query_bool(name: str, *, required: bool = False, default: bool = False) -> bool:
    value = request.args.get(name)
    if value is None:
        if required:
            raise ValidationFailed(f"missing query parameter '{name}'", f"/{name}")
        return default
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValidationFailed(f"invalid boolean '{value}' for query parameter '{name}'", f"/{name}")


def query_str(name: str, *, required: bool = False, default: str = "") -> str:
    value = request.args.get(name)
    if value is None:
        if required:
            raise ValidationFailed(f"missing query parameter '{name}'", f"/{name}")
        return default
    return value


def statuses(overrides: dict[type[KleeneError], int]) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Any]]:
    """Answer this route's core errors with upstream's statuses where they differ from the table."""

    def decorate(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await handler(*args, **kwargs)
            except KleeneError as exc:
                return error_reply(exc.message, status_for(exc, overrides))

        return wrapper

    return decorate
