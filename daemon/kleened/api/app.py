"""The quart-trio application: blueprints, limits and the error contract.

Error contract (upstream's, made consistent): an unknown route is 404 with the plain-text body
`not found`, a known route with the wrong method 405; a body that does not decode is 422 with a
readable message; a core error is `{"message": ...}` with the status from `errors.STATUS`;
anything unexpected is a JSON 500 with the whole message and the request id (never an HTML
page). Every response carries `X-Request-Id`, and every log line of the request `request=<id>`.
"""

from __future__ import annotations

import logging
import secrets
import time

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..core.errors import KleeneError
from ..core.services import Services
from ..logs import REQUEST_ID
from . import build, containers, copies, execs, images, networks, oci, stats, streams, system, volumes
from .errors import status_for
from .http import IdentPath, ValidationFailed, error_reply, internal_message, reply

log = logging.getLogger(__name__)

BLUEPRINTS = [system.bp, volumes.bp, containers.bp, copies.bp, execs.bp, images.bp, build.bp, oci.bp, networks.bp,
              streams.bp, stats.bp]


def create_app(services: Services, *, max_request_body: int) -> QuartTrio:
    app = QuartTrio("kleened")
    app.config["KLEENE_SERVICES"] = services
    app.config["MAX_CONTENT_LENGTH"] = max_request_body
    app.config["BODY_TIMEOUT"] = 30
    app.url_map.strict_slashes = False
    app.url_map.converters["ident"] = IdentPath
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)

    @app.before_request
    async def name_request() -> None:
        REQUEST_ID.set(secrets.token_hex(6))
        request.started = time.monotonic()  # type: ignore[attr-defined]

    @app.before_websocket
    async def name_websocket() -> None:
        REQUEST_ID.set(secrets.token_hex(6))

    @app.after_request
    async def tag_response(response: Response) -> Response:
        response.headers["X-Request-Id"] = REQUEST_ID.get()
        if log.isEnabledFor(logging.DEBUG):  # where a call's time goes: this line and the host commands'
            started = getattr(request, "started", None)
            ms = "" if started is None else f"{(time.monotonic() - started) * 1000:.1f}"
            log.debug("request served", extra={"method": request.method, "path": request.path,
                                                "status": response.status_code, "ms": ms})
        return response

    @app.errorhandler(KleeneError)
    async def kleene_error(exc: KleeneError) -> Response:
        return error_reply(exc.message, status_for(exc))

    @app.errorhandler(ValidationFailed)
    async def validation_failed(exc: ValidationFailed) -> Response:
        errors = [{"title": "Invalid value", "source": {"pointer": exc.pointer}, "detail": exc.message}]
        return reply({"message": exc.message, "errors": errors}, 422)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if exc.code == 404:
            return Response("not found", status=404, content_type="text/plain")
        if exc.code == 405:
            response = error_reply("method not allowed", 405)
            response.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or [])
            return response
        if exc.code == 413:
            return error_reply(f"request body larger than {max_request_body} bytes", 413)
        return error_reply(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    async def crash(exc: Exception) -> Response:
        log.exception("request failed")
        return error_reply(f"{internal_message(exc)} (request {REQUEST_ID.get()})", 500)

    return app
