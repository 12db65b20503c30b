"""A minimal RFC 6455 WebSocket client for kleened's streams (exec, build, image create, ...).

One reader thread may call `recv` while another calls `send` (klee pumps stdin that way):
sends are serialised by a lock. Pings are answered inside `recv`. A close frame from the server
is answered and then raised as `ConnectionClosed` carrying its code and reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
from dataclasses import dataclass

from .sockets import Endpoint, open_socket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _masked(payload: bytes, mask: bytes) -> bytes:
    """`payload` XORed with the 4-byte `mask` (RFC 6455 5.3): each of the four byte lanes through a
    translation table, which is about four times faster than one big-integer XOR (it matters for
    uploads: a build context, an archive, `cp`)."""
    data = bytearray(payload)
    for lane, key in enumerate(mask):
        data[lane::4] = data[lane::4].translate(bytes(b ^ key for b in range(256)))
    return bytes(data)


class WebSocketError(Exception):
    """The handshake failed or the server broke the protocol."""


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


class ConnectionClosed(Exception):  # the name websockets users know
    """The end of a session. `rcvd` is the server's close frame (None when it sent none)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}")
        self.code = code
        self.reason = reason
        self.rcvd = Close(code, reason) if code is not None else None


class WebSocket:
    def __init__(self, sock: socket.socket, *, max_size: int) -> None:
        self._sock = sock
        self._max_size = max_size
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self._closed: ConnectionClosed | None = None

    @classmethod
    def connect(cls, endpoint: Endpoint, path: str, *, timeout: float, max_size: int) -> WebSocket:
        sock = open_socket(endpoint, timeout)
        try:
            key = base64.b64encode(os.urandom(16))
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {endpoint.authority}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode())
            ws = cls(sock, max_size=max_size)
            ws._handshake(key)
            sock.settimeout(None)
            return ws
        except BaseException:
            sock.close()
            raise

    def _handshake(self, key: bytes) -> None:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
            if len(self._buffer) > 65536:
                raise WebSocketError("the server's handshake answer is too long")
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        self._buffer = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise WebSocketError(f"server rejected WebSocket connection: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise WebSocketError("the server's Sec-WebSocket-Accept does not match")

    # --- receiving ----------------------------------------------------------------------------

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionClosed(None, "")
        self._buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._take(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        if length > self._max_size:
            raise WebSocketError(f"frame of {length} bytes exceeds the limit of {self._max_size}")
        mask = self._take(4) if b1 & 0x80 else None
        payload = self._take(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message (str for TEXT, bytes for BINARY); ConnectionClosed at the end."""
        if self._closed is not None:
            raise self._closed
        self._sock.settimeout(timeout)
        try:
            opcode, parts = None, []
            while True:
                fin, op, payload = self._frame()
                if op == OP_PING:
                    self._send_frame(OP_PONG, payload)
                    continue
                if op == OP_PONG:
                    continue
                if op == OP_CLOSE:
                    self._on_close(payload)
                if op != OP_CONT:
                    opcode, parts = op, []
                parts.append(payload)
                if sum(map(len, parts)) > self._max_size:
                    raise WebSocketError("message exceeds the size limit")
                if fin:
                    data = b"".join(parts)
                    return data.decode() if opcode == OP_TEXT else data
        except ConnectionClosed as exc:
            self._closed = exc
            raise

    def _on_close(self, payload: bytes) -> None:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        reason = payload[2:].decode(errors="replace")
        with contextlib.suppress(OSError):  # the server may be gone; the close it sent is what counts
            self._send_frame(OP_CLOSE, payload[:2])
        self._sock.close()
        raise ConnectionClosed(code, reason)

    # --- sending ------------------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self._send_frame(OP_TEXT, message.encode())
        else:
            self._send_frame(OP_BINARY, message)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = _masked(payload, mask)
        with self._send_lock:
            self._sock.sendall(header + mask + masked)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if still open) and wait briefly for the server's answer."""
        if self._closed is not None:
            return
        try:
            self._send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])
            self._sock.settimeout(2)
            while True:
                self.recv(2)
        except (ConnectionClosed, OSError, WebSocketError):
            pass
        finally:
            self._closed = self._closed or ConnectionClosed(code, reason)
            self._sock.close()
