"""A minimal RFC 6455 WebSocket client for kleened's streams (exec, build, image create, ...).

One reader thread may call `recv` while another calls `send` (klee pumps stdin that way):
sends are serialised by a lock. Inside `recv`:
- pings from the server are answered at once;
- when nothing arrives for `ping_interval` seconds, klee sends a ping of its own, and a server
  that sends nothing at all (no pong, no data) for `ping_timeout` more seconds is declared gone:
  a half-open connection (a host that vanished) ends with an error instead of hanging forever;
- frames that break the protocol end the session with a 1002 close and `WebSocketError`: a
  masked frame (servers never mask, RFC 6455 5.1), reserved bits (no extension was negotiated),
  an unknown opcode, a fragmented or oversized control frame, a continuation frame with no
  message to continue, a new message before the previous one ended;
- fragmented messages are joined, control frames between their fragments handled.
A close frame from the server is answered and then raised as `ConnectionClosed` carrying its
code and reason. `close()` waits for the server's answer until a deadline, then drops the socket.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import socket
import struct
import threading
import time
from typing import NamedTuple, NoReturn

from .sockets import Endpoint, WireError, open_socket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPS = (OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

PING_INTERVAL = 20.0  # seconds of silence before klee pings (websockets' default)
PING_TIMEOUT = 20.0  # seconds more without any frame before the connection counts as lost
CLOSE_TIMEOUT = 2.0  # seconds close() waits for the server's close frame


def _masked(payload: bytes, mask: bytes) -> bytes:
    """`payload` XORed with the 4-byte `mask` (RFC 6455 5.3): each of the four byte lanes through a
    translation table, which is about four times faster than one big-integer XOR (it matters for
    uploads: a build context, an archive, `cp`)."""
    data = bytearray(payload)
    for lane, key in enumerate(mask):
        data[lane::4] = data[lane::4].translate(bytes(b ^ key for b in range(256)))
    return bytes(data)


class WebSocketError(WireError):
    """The handshake failed, the server broke the protocol, or it stopped answering."""


class Close(NamedTuple):
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
    def __init__(
        self,
        sock: socket.socket,
        *,
        max_size: int,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._sock = sock
        self._max_size = max_size
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self._closed: ConnectionClosed | None = None
        self._ping_sent_at: float | None = None
        self._message_op: int | None = None  # the opcode of a fragmented message in progress
        self._fragments: list[bytes] = []

    @classmethod
    def connect(cls, endpoint: Endpoint, path: str, *, timeout: float, max_size: int, **options: float) -> WebSocket:
        sock = open_socket(endpoint, timeout)
        try:
            key = base64.b64encode(os.urandom(16))
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {endpoint.authority}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode())
            ws = cls(sock, max_size=max_size, **options)
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
        if headers.get("sec-websocket-extensions"):
            raise WebSocketError("the server enabled a WebSocket extension klee did not ask for")

    # --- receiving ----------------------------------------------------------------------------

    def _fill(self) -> None:
        chunk = self._recv_tls() if hasattr(self._sock, "pending") else self._sock.recv(65536)  # TLS or not
        if not chunk:
            raise ConnectionClosed(None, "")
        self._buffer += chunk

    def _recv_tls(self) -> bytes:
        """One OpenSSL connection must never read and write at once (klee's stdin pump sends
        from another thread while this one reads): wait for bytes outside the send lock, then
        read them without blocking under it."""
        import ssl  # only TLS sessions get here; the local fast path never imports it

        timeout = self._sock.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._sock.pending():
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select([self._sock], [], [], wait)
                if not readable:
                    raise TimeoutError("timed out")
            with self._send_lock:
                self._sock.setblocking(False)
                try:
                    return self._sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue  # a partial record: wait for the rest
                finally:
                    self._sock.settimeout(timeout)

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _parse(self) -> tuple[bool, int, bytes] | None:
        """The first whole frame in the buffer (consumed), or None while it is incomplete.

        Nothing is consumed before the whole frame is there, so a timeout in the middle of a
        frame loses nothing."""
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        b0, b1 = buffer[0], buffer[1]
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        if b0 & 0x70:
            self._fail("the server set reserved bits of a frame (no extension was negotiated)")
        if b1 & 0x80:
            self._fail("the server sent a masked frame (servers must not mask, RFC 6455 5.1)")
        if opcode not in (OP_CONT, *_DATA_OPS, *_CONTROL_OPS):
            self._fail(f"the server sent a frame of unknown opcode {opcode:#x}")
        length, offset = b1 & 0x7F, 2
        if opcode in _CONTROL_OPS and (length > 125 or not fin):
            self._fail("the server sent a fragmented or oversized control frame")
        if length == 126:
            if len(buffer) < 4:
                return None
            length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
        if length > self._max_size:
            self._fail(f"frame of {length} bytes exceeds the limit of {self._max_size}", CLOSE_TOO_BIG)
        if len(buffer) < offset + length:
            return None
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        return fin, opcode, payload

    def _fail(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> NoReturn:
        """Close the session for a protocol violation (best effort) and raise `WebSocketError`."""
        with contextlib.suppress(OSError):
            self._send_frame(OP_CLOSE, struct.pack("!H", code))
        self._sock.close()
        error = WebSocketError(message)
        self._closed = ConnectionClosed(code, message)
        raise error

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message (str for TEXT, bytes for BINARY); ConnectionClosed at the end.

        `timeout`: seconds to wait for a message (None: as long as the server stays alive);
        TimeoutError when it passes.
        """
        if self._closed is not None:
            raise self._closed
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                fin, op, payload = self._next_frame(deadline)
                if op == OP_PING:
                    self._send_frame(OP_PONG, payload)
                elif op == OP_CLOSE:
                    self._on_close(payload)
                elif op in _DATA_OPS or op == OP_CONT:
                    message = self._assemble(fin, op, payload)
                    if message is not None:
                        return message
        except ConnectionClosed as exc:
            self._closed = exc
            raise

    def _next_frame(self, deadline: float | None) -> tuple[bool, int, bytes]:
        """Read one frame; ping the server when it is silent, fail when it stays silent."""
        while (frame := self._parse()) is None:
            waits = [] if deadline is None else [deadline - time.monotonic()]
            if self._ping_interval is not None:
                if self._ping_sent_at is None:
                    waits.append(self._ping_interval)
                else:
                    waits.append(self._ping_sent_at + self._ping_timeout - time.monotonic())
            wait = min(waits) if waits else None
            if wait is not None and wait <= 0:
                self._silence(deadline)
                continue
            self._sock.settimeout(wait)
            try:
                self._fill()
            except TimeoutError:
                self._silence(deadline)
                continue
            self._ping_sent_at = None  # any byte shows the server is alive
        return frame

    def _silence(self, deadline: float | None) -> None:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimeoutError("timed out waiting for kleened")
        if self._ping_interval is None:
            return
        if self._ping_sent_at is None:
            self._ping_sent_at = now
            self._send_frame(OP_PING, os.urandom(4))
        elif now >= self._ping_sent_at + self._ping_timeout:
            self._sock.close()
            self._closed = ConnectionClosed(None, "")
            raise WebSocketError(
                f"kleened did not answer a ping within {self._ping_timeout:g} s: the connection is lost"
            )

    def _assemble(self, fin: bool, op: int, payload: bytes) -> str | bytes | None:
        """Join fragments; return a whole message, or None while one is still incomplete."""
        if op == OP_CONT:
            if self._message_op is None:
                self._fail("the server sent a continuation frame with no message to continue")
        elif self._message_op is not None:
            self._fail("the server started a new message before ending the previous one")
        else:
            self._message_op = op
        self._fragments.append(payload)
        if sum(map(len, self._fragments)) > self._max_size:
            self._fail(f"message exceeds the limit of {self._max_size} bytes", CLOSE_TOO_BIG)
        if not fin:
            return None
        data, opcode = b"".join(self._fragments), self._message_op
        self._fragments, self._message_op = [], None
        if opcode == OP_TEXT:
            try:
                return data.decode()
            except UnicodeDecodeError:
                self._fail("the server sent a TEXT message that is not UTF-8", 1007)
        return data

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

    def ping(self, payload: bytes = b"") -> None:
        self._send_frame(OP_PING, payload)

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
        """Send a close frame (if still open) and wait for the server's, at most `close_timeout` seconds."""
        if self._closed is not None:
            return
        try:
            self._send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])
            deadline = time.monotonic() + self._close_timeout
            self._ping_interval = None  # no pings while closing: the deadline decides
            while True:
                self.recv(max(deadline - time.monotonic(), 0.001))
        except (ConnectionClosed, OSError):  # WebSocketError and TimeoutError are OSErrors
            pass
        finally:
            self._closed = self._closed or ConnectionClosed(code, reason)
            self._sock.close()
