"""Talking to kleened: host addresses, REST calls and WebSocket streams.

A *host* is `http[s]:///path/to/socket` (unix socket) or `http[s]://ip[:port]` / `[ipv6][:port]`
(TCP). Over a unix socket the HTTP `Host` is `localhost`, and so is the TLS server name, as in
upstream klee. The transports are `klee.wire` (standard library only): httpx and websockets
cost 150 ms or more to import, more than a whole `klee exec` should take. Tests may still
inject an httpx transport (`Client(transport=httpx.MockTransport(...))`).

Every failure leaves this module as a `KleeError`: `ConnectionFailed` when kleened cannot be
reached, `ApiError(status, message)` when it answers with an error status.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlsplit

from klee.config import Settings
from klee.errors import ApiError, ConnectionFailed, KleeError, UsageError

if TYPE_CHECKING:
    import ssl

    import httpx

    from klee.session import Session
    from klee.wire.http import HttpClient
    from klee.wire.sockets import Endpoint
    from klee.wire.websocket import WebSocket

TIMEOUT = 60.0  # seconds for a REST call; kleened answers them quickly
CONNECT_TIMEOUT = 10.0
MAX_FRAME = 4 * 2**20  # kleened keeps frames far below 1 MiB; allow some slack

HOST_ERROR = "Could not parse the '--host' parameter"
TIMEOUT_ERROR = "Error! Timed out while waiting for Kleene to respond."
UNEXPECTED_RESPONSE = "Error! Unexpected response received from Kleened."


class Host(NamedTuple):
    """A parsed `--host`. `netloc` is "" for a unix socket, whose path is then `path`."""

    scheme: str
    netloc: str
    path: str

    @property
    def is_unix(self) -> bool:
        return self.netloc == ""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def base_url(self) -> str:
        if self.is_unix:
            return f"{self.scheme}://localhost"
        return f"{self.scheme}://{self.netloc}{self.path}"

    def ws_uri(self, endpoint: str) -> str:
        scheme = "wss" if self.tls else "ws"
        if self.is_unix:
            return f"{scheme}://localhost{endpoint}"
        return f"{scheme}://{self.netloc}{self.path}{endpoint}"


def parse_host(text: str) -> Host:
    """Parse a `--host` value; raise `UsageError` with upstream's message when it is unusable."""
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError as exc:
        raise UsageError(f"{HOST_ERROR}: {exc}") from None
    if parts.query or parts.fragment or ";" in parts.path:
        raise UsageError(HOST_ERROR)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{HOST_ERROR}: the scheme must be 'http' or 'https'")
    if parts.netloc == "":
        if parts.path in ("", "/"):
            raise UsageError(f"{HOST_ERROR}: the path of the unix socket is missing")
        return Host(parts.scheme, "", parts.path)
    if "@" in parts.netloc:
        raise UsageError(f"{HOST_ERROR}: user information is not supported")
    if not parts.hostname or not port_ok:
        raise UsageError(f"{HOST_ERROR}: expected an address like http://127.0.0.1:8080 or http://[::1]:8080")
    return Host(parts.scheme, parts.netloc, parts.path.rstrip("/"))


def quote_ident(ident: str) -> str:
    """Quote one path parameter so that it stays one path segment.

    `/`, `?`, `#` and `%` are escaped; `:` and `@` stay readable (`FreeBSD:latest@snap`).
    A segment of only dots is escaped too, because HTTP clients resolve `.` and `..`.
    """
    if ident == "":
        raise UsageError("Error! An empty name or id was given")
    quoted = quote(ident, safe=":@")
    if quoted.strip(".") == "":
        quoted = quoted.replace(".", "%2E")
    return quoted


def api_path(template: str, *idents: str) -> str:
    """`api_path("/volumes/{}/inspect", name)` with every ident quoted."""
    return template.format(*(quote_ident(ident) for ident in idents))


def query_bool(value: bool) -> str:
    return "true" if value else "false"


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for REST and streams.

    The server certificate is checked when `tlsverify` is set or a CA file is given (the CA
    file implies verification); the CA is then that file, or certifi's bundle. A client
    certificate is presented when `tlscert` is set.
    """
    import ssl

    try:
        if settings.tlsverify or settings.tlscacert:
            context = ssl.create_default_context(cafile=settings.tlscacert or _certifi_bundle())
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if settings.tlscert:
            context.load_cert_chain(settings.tlscert, keyfile=settings.tlskey)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"Error! Could not load the TLS certificates: {exc}") from None
    return context


def _certifi_bundle() -> str | None:
    try:
        import certifi
    except ImportError:
        return None  # the system's default CA store
    return certifi.where()


class Client:
    """A connection to one kleened, opened lazily on the first call."""

    def __init__(
        self, settings: Settings, transport: httpx.BaseTransport | None = None, timeout: float = TIMEOUT
    ) -> None:
        self.settings = settings
        self.host = parse_host(settings.host)
        self.timeout = timeout  # seconds per REST call (shell completion uses a short one)
        self._transport = transport  # tests pass an httpx.MockTransport
        self._http: httpx.Client | None = None
        self._http_wire: HttpClient | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._http_wire is not None:
            self._http_wire.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """Send one request; return the decoded JSON body (None when empty) of an `ok` status."""
        content = None if body is None else json.dumps(body).encode()
        if self._transport is not None:
            status, data = self._request_httpx(method, path, content, params)
        else:
            status, data = self._request_wire(method, path, content, params)
        if status not in ok:
            raise api_error(status, data)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise KleeError(UNEXPECTED_RESPONSE) from None

    def _request_wire(
        self, method: str, path: str, content: bytes | None, params: Mapping[str, str] | None
    ) -> tuple[int, bytes]:
        from urllib.parse import urlencode

        target = self._prefix() + path + (f"?{urlencode(params)}" if params else "")
        try:
            response = self._wire().request(method, target, content)
        except TimeoutError:
            raise KleeError(TIMEOUT_ERROR) from None
        except OSError as exc:  # HttpError and ssl.SSLError are OSErrors
            from klee.wire.http import HttpError

            if isinstance(exc, HttpError):
                raise ConnectionFailed(f"Error! kleened's answer could not be read: {exc}") from None
            raise ConnectionFailed(f"unable to connect to kleened: {exc}") from None
        return response.status, response.content

    def _request_httpx(
        self, method: str, path: str, content: bytes | None, params: Mapping[str, str] | None
    ) -> tuple[int, bytes]:
        import httpx

        headers = {"content-type": "application/json"} if content is not None else None
        try:
            response = self._client().request(method, path, content=content, params=params, headers=headers)
        except httpx.TimeoutException:
            raise KleeError(TIMEOUT_ERROR) from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"unable to connect to kleened: {exc}") from None
        return response.status_code, response.content

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    @contextlib.contextmanager
    def stream(self, endpoint: str) -> Iterator[WebSocket]:
        """A WebSocket to `endpoint` (e.g. "/exec/start"), closed on exit."""
        from klee.wire.sockets import WireError
        from klee.wire.websocket import WebSocket, WebSocketError

        try:
            websocket = WebSocket.connect(self._endpoint(), self._prefix() + endpoint, timeout=CONNECT_TIMEOUT,
                                          max_size=MAX_FRAME)
        except (OSError, WebSocketError) as exc:
            raise ConnectionFailed(f"unable to connect to kleened: {exc}") from None
        try:
            yield websocket
        except (WireError, TimeoutError, ConnectionResetError, ConnectionAbortedError) as exc:
            # Lost or broken mid-stream (klee's own output errors, such as a closed stdout, pass on).
            raise ConnectionFailed(f"Error! connection to kleened lost: {exc}") from None
        finally:
            websocket.close()

    def _prefix(self) -> str:
        """A path prefix given in a TCP `--host` (upstream ignores it for streams; we do not)."""
        return "" if self.host.is_unix else self.host.path.rstrip("/")

    def _endpoint(self) -> Endpoint:
        from klee.wire.sockets import Endpoint

        tls = ssl_context(self.settings) if self.host.tls else None
        if self.host.is_unix:
            return Endpoint(unix_path=self.host.path, tls=tls, server_hostname="localhost")
        parts = urlsplit(f"//{self.host.netloc}")
        host = parts.hostname or "localhost"
        port = parts.port or (443 if self.host.tls else 80)
        return Endpoint(host=host, port=port, tls=tls, server_hostname=host)

    def _wire(self) -> HttpClient:
        if self._http_wire is None:
            from klee.wire.http import HttpClient

            self._http_wire = HttpClient(self._endpoint(), timeout=self.timeout, connect_timeout=CONNECT_TIMEOUT)
        return self._http_wire

    def _client(self) -> httpx.Client:
        if self._http is None:
            import httpx

            transport = self._transport
            if transport is None:
                verify: Any = ssl_context(self.settings) if self.host.tls else False
                uds = self.host.path if self.host.is_unix else None
                transport = httpx.HTTPTransport(uds=uds, verify=verify)
            self._http = httpx.Client(
                base_url=self.host.base_url,
                transport=transport,
                timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
                trust_env=False,  # a proxy from the environment must not see kleened's traffic
            )
        return self._http


def api_error(status: int, content: bytes) -> ApiError:
    """The `ApiError` of an error response: its `message`, or a description of the status."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        message = data.get("message")
        if isinstance(message, str):
            return ApiError(status, message.rstrip("\n"))
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            return ApiError(status, "invalid request: " + "; ".join(_describe(error) for error in errors))
    if status == 500:
        return ApiError(status, "unknown backend error")
    return ApiError(status, f"unrecognized status-code received from kleened: {status}")


def _describe(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    detail = str(error.get("detail") or error.get("title") or "invalid value")
    pointer = (error.get("source") or {}).get("pointer") if isinstance(error.get("source"), dict) else None
    return f"{pointer}: {detail}" if pointer else detail


def reply_id(reply: Any) -> str:
    """The `id` of an `IdResponse`."""
    if isinstance(reply, dict) and isinstance(reply.get("id"), str):
        return reply["id"]
    raise KleeError(UNEXPECTED_RESPONSE)


def reply_list(reply: Any) -> list[Any]:
    """A JSON list reply (ids, or objects of a listing)."""
    if isinstance(reply, list):
        return reply
    raise KleeError(UNEXPECTED_RESPONSE)


def remote_daemon(session: Session) -> str | None:
    """The daemon's address when it is on another machine (TCP to a non-loopback address), else None."""
    import ipaddress

    host = parse_host(session.settings.host)
    if host.is_unix:
        return None
    hostname = urlsplit(f"//{host.netloc}").hostname or ""
    if hostname == "localhost":
        return None
    try:
        if ipaddress.ip_address(hostname).is_loopback:
            return None
    except ValueError:
        pass  # a host name: assume another machine
    return host.netloc


def host_path_notice(session: Session, path: str, what: str) -> None:
    """Warn, on one stderr line, that `path` (a bind mount source, a build context) is read on the daemon's host."""
    remote = remote_daemon(session)
    if remote is not None:
        print(f"warning: {what} '{path}' is a path on the daemon's host ({remote}), not on this machine",
              file=sys.stderr, flush=True)
