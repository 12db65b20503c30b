"""A minimal HTTP/1.1 client for kleened's REST API: one keep-alive connection, JSON bodies.

Written on sockets rather than `http.client`, whose import (it pulls in the email package)
costs more than the rest of a REST call. kleened always answers REST calls with a
Content-Length (or chunked) body, no 1xx, no trailers.

Retries: a request is sent again on a new connection only when that cannot apply it twice,
i.e. when it is idempotent (GET, HEAD, PUT, DELETE, OPTIONS) or when none of its bytes reached
the socket. A kept-alive connection the server closed while idle is noticed before sending
(it is readable), so a POST does not fail just because the daemon's
keep-alive timer ran out.
"""

from __future__ import annotations

import select
import socket
from typing import NamedTuple

from .sockets import Endpoint, WireError, open_socket

MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024


IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class HttpError(WireError):
    """The server's answer is not HTTP/1.1 as expected, or it went away mid-answer."""


class ConnectionLost(HttpError):
    """The server closed the connection before its answer was complete."""


class _NotSent(Exception):
    """The connection failed before any byte of the request was written (safe to retry)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Response(NamedTuple):
    status: int
    content: bytes


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionLost("the server closed the connection")
        self._buffer += chunk

    def until(self, marker: bytes, limit: int) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > limit:
                raise HttpError("the server's answer has an oversized header")
            self._fill()
        data = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return data

    def exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


class HttpClient:
    """Requests over one connection, reopened when the server closed it while idle."""

    def __init__(self, endpoint: Endpoint, *, timeout: float, connect_timeout: float) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._reader: _Reader | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._endpoint.authority}\r\nAccept: application/json\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT"):
            head += "Content-Length: 0\r\n"
        message = (head + "\r\n").encode() + (body or b"")
        if self._sock is not None and _peer_closed(self._sock):
            self.close()  # closed by the server while idle: reconnect before sending, not after
        reused = self._sock is not None
        try:
            return self._exchange(message)
        except _NotSent as exc:
            self.close()
            if not reused:
                raise exc.cause from None
        except (ConnectionLost, ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            if not (reused and method in IDEMPOTENT):
                if reused:
                    raise HttpError(f"kleened closed the connection during a {method} request, which may or may "
                                    f"not have been applied: {exc}") from None
                raise
        except OSError:
            self.close()  # a timeout or a broken answer: the connection's state is unknown
            raise
        try:
            return self._exchange(message)  # once, on a new connection
        except _NotSent as exc:
            raise exc.cause from None

    def _exchange(self, message: bytes) -> Response:
        if self._sock is None:
            self._sock = open_socket(self._endpoint, self._connect_timeout)
            self._sock.settimeout(self._timeout)
            self._reader = _Reader(self._sock)
        assert self._reader is not None
        _send(self._sock, message)
        status_line, *header_lines = self._reader.until(b"\r\n\r\n", MAX_HEAD).decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"unexpected answer from kleened: {status_line!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = self._chunked()
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise HttpError(f"unexpected Content-Length from kleened: {headers['content-length']!r}") from None
            if length > MAX_BODY:
                raise HttpError(f"answer of {length} bytes is too large")
            content = self._reader.exactly(length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(int(parts[1]), content)

    def _chunked(self) -> bytes:
        assert self._reader is not None
        body = bytearray()
        while True:
            line = self._reader.until(b"\r\n", 1024).split(b";")[0]
            try:
                size = int(line, 16)
            except ValueError:
                raise HttpError(f"unexpected chunk size from kleened: {line!r}") from None
            if size == 0:
                self._reader.until(b"\r\n", 1024)
                return bytes(body)
            body += self._reader.exactly(size)
            self._reader.exactly(2)
            if len(body) > MAX_BODY:
                raise HttpError("answer too large")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._reader = None


def _send(sock: socket.socket, message: bytes) -> None:
    """`sendall`, telling apart a failure before the first byte (`_NotSent`) from one after."""
    sent = 0
    view = memoryview(message)
    while sent < len(message):
        try:
            sent += sock.send(view[sent:])
        except (ConnectionResetError, BrokenPipeError) as exc:
            if sent == 0:
                raise _NotSent(exc) from None
            raise


def _peer_closed(sock: socket.socket) -> bool:
    """True when an idle kept-alive connection is unusable: readable at all means the server
    closed it (EOF, a reset, a TLS close_notify), since nothing is due before a request."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    pending = getattr(sock, "pending", None)  # bytes TLS has decrypted but not handed out
    return bool(readable) or (pending is not None and pending() > 0)
