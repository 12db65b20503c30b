"""A minimal HTTP/1.1 client for kleened's REST API: one keep-alive connection, JSON bodies.

Written on sockets rather than `http.client`, whose import (it pulls in the email package)
costs more than the rest of a REST call. kleened always answers REST calls with a
Content-Length (or chunked) body, no 1xx, no trailers.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .sockets import Endpoint, open_socket

MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024


class HttpError(OSError):
    """The server's answer is not HTTP/1.1 as expected, or it went away mid-answer."""


@dataclass(frozen=True)
class Response:
    status: int
    content: bytes


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise HttpError("the server closed the connection")
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
        reused = self._sock is not None
        try:
            return self._exchange(message)
        except (HttpError, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
        return self._exchange(message)  # the idle connection had been closed by the server: retry once

    def _exchange(self, message: bytes) -> Response:
        if self._sock is None:
            self._sock = open_socket(self._endpoint, self._connect_timeout)
            self._sock.settimeout(self._timeout)
            self._reader = _Reader(self._sock)
        assert self._reader is not None
        self._sock.sendall(message)
        status_line, *header_lines = self._reader.until(b"\r\n\r\n", MAX_HEAD).decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"unexpected answer from kleened: {status_line!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = self._chunked()
        else:
            length = int(headers.get("content-length", "0"))
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
            size = int(self._reader.until(b"\r\n", 1024).split(b";")[0], 16)
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
