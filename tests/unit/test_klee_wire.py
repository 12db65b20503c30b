"""klee's wire layer against a real socket peer: a thread on a unix socket that speaks raw
bytes, so every test controls exactly what the "server" sends (pings, masked frames, reserved
bits, fragments, silence, closed connections)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from klee.config import Settings
from klee.connection import Client
from klee.errors import ConnectionFailed
from klee.wire.http import HttpClient, HttpError
from klee.wire.sockets import Endpoint
from klee.wire.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ConnectionClosed,
    WebSocket,
    WebSocketError,
)

Script = Callable[["Peer"], None]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Peer:
    """One accepted connection, with helpers to read and write raw frames."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def accept_websocket(self) -> None:
        head = self.read_until(b"\r\n\r\n").decode()
        headers = dict(line.split(":", 1) for line in head.split("\r\n")[1:])
        key = next(value.strip() for name, value in headers.items() if name.lower() == "sec-websocket-key")
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.conn.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode())

    def frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = False) -> None:
        b0 = (0x80 if fin else 0) | rsv | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", b0, (0x80 if mask else 0) | length)
        else:
            header = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, length)
        if mask:
            key = b"\x01\x02\x03\x04"
            payload = key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.conn.sendall(header + payload)

    def read_frame(self) -> tuple[int, bytes]:
        """A client frame (the client must mask: checked), as (opcode, unmasked payload)."""
        b0, b1 = self.read_exactly(2)
        assert b1 & 0x80, "client frames must be masked"
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.read_exactly(2))[0]
        key = self.read_exactly(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(self.read_exactly(length)))
        return b0 & 0x0F, payload


class Server:
    """Accepts connections on a unix socket and runs one script per connection, in order."""

    def __init__(self, path: Path, scripts: list[Script]) -> None:
        self.path = path
        self.scripts = list(scripts)
        self.connections = 0
        self.errors: list[BaseException] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.scripts:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            script = self.scripts.pop(0)
            with conn:
                try:
                    script(Peer(conn))
                except (EOFError, ConnectionResetError, BrokenPipeError):
                    pass
                except BaseException as exc:  # reported by the test through `errors`
                    self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=10)
        assert not self.errors, self.errors


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*scripts: Script) -> Server:
        server = Server(tmp_path / f"peer{len(servers)}.sock", list(scripts))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def connect(server: Server, **options: float) -> WebSocket:
    return WebSocket.connect(Endpoint(unix_path=str(server.path)), "/exec/start", timeout=5, max_size=1 << 20,
                             **options)


# --- WebSocket ----------------------------------------------------------------------------------


def test_server_pings_are_answered_with_the_same_payload(serve):
    answers: list[tuple[int, bytes]] = []

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        peer.frame(OP_PING, b"are you there")
        answers.append(peer.read_frame())
        peer.frame(OP_TEXT, b"after the ping")
        peer.frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
        peer.read_frame()

    ws = connect(serve(script))
    assert ws.recv() == "after the ping"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv()
    assert (closed.value.code, closed.value.reason) == (1000, "bye")
    assert answers == [(OP_PONG, b"are you there")]


def test_a_silent_server_is_pinged_and_a_pong_keeps_the_session(serve):
    pings: list[bytes] = []

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        opcode, payload = peer.read_frame()  # klee pings a silent server
        assert opcode == OP_PING
        pings.append(payload)
        peer.frame(OP_PONG, payload)
        peer.frame(OP_BINARY, b"data")
        peer.frame(OP_CLOSE, struct.pack("!H", 1000))
        peer.read_frame()

    ws = connect(serve(script), ping_interval=0.05, ping_timeout=30)
    assert ws.recv() == b"data"
    assert len(pings) == 1


def test_a_server_that_never_answers_a_ping_ends_the_session(serve):
    seen: list[int] = []

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        seen.append(peer.read_frame()[0])
        peer.read_exactly(1 << 30)  # a half-open peer: reads nothing more, answers nothing

    ws = connect(serve(script), ping_interval=0.05, ping_timeout=0.1)
    with pytest.raises(WebSocketError, match="did not answer a ping"):
        ws.recv()
    assert seen == [OP_PING]
    with pytest.raises(ConnectionClosed):
        ws.recv()  # the session is over


@pytest.mark.parametrize(
    ("send", "error"),
    [
        (lambda peer: peer.frame(OP_TEXT, b"hidden", mask=True), "masked frame"),
        (lambda peer: peer.frame(OP_TEXT, b"compressed?", rsv=0x40), "reserved bits"),
        (lambda peer: peer.frame(0x3, b""), "unknown opcode"),
        (lambda peer: peer.frame(OP_PING, b"x", fin=False), "control frame"),
        (lambda peer: peer.frame(OP_CONT, b"orphan"), "continuation frame"),
        (lambda peer: (peer.frame(OP_TEXT, b"a", fin=False), peer.frame(OP_BINARY, b"b")), "new message"),
    ],
    ids=["masked", "rsv", "opcode", "fragmented-control", "orphan-continuation", "interleaved"],
)
def test_protocol_violations_are_refused_with_1002(serve, send, error):
    answers: list[tuple[int, bytes]] = []

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        send(peer)
        answers.append(peer.read_frame())

    server = serve(script)
    ws = connect(server, ping_interval=None)
    with pytest.raises(WebSocketError, match=error):
        ws.recv()
    server.thread.join(timeout=10)
    assert answers == [(OP_CLOSE, struct.pack("!H", 1002))]


def test_fragmented_messages_are_joined_around_control_frames(serve):
    pongs: list[tuple[int, bytes]] = []

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        peer.frame(OP_TEXT, "héllo ".encode()[:2], fin=False)  # cut inside a UTF-8 character
        peer.frame(OP_PING, b"mid")
        peer.frame(OP_CONT, "héllo ".encode()[2:], fin=False)
        peer.frame(OP_CONT, b"world")
        pongs.append(peer.read_frame())
        peer.frame(OP_BINARY, b"\x01", fin=False)
        peer.frame(OP_CONT, b"\x02")
        peer.frame(OP_CLOSE, struct.pack("!H", 1000))
        peer.read_frame()

    ws = connect(serve(script), ping_interval=None)
    assert ws.recv() == "héllo world"
    assert ws.recv() == b"\x01\x02"
    assert pongs == [(OP_PONG, b"mid")]


def test_a_frame_split_across_reads_survives_a_recv_timeout(serve):
    release = threading.Event()

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        peer.conn.sendall(b"\x82\x05ab")  # half of a 5-byte BINARY frame
        release.wait(10)
        peer.conn.sendall(b"cde")
        peer.frame(OP_CLOSE, struct.pack("!H", 1000))
        peer.read_frame()

    ws = connect(serve(script), ping_interval=None)
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    release.set()
    assert ws.recv(timeout=10) == b"abcde"


def test_close_gives_up_at_its_deadline_when_the_server_never_answers(serve):
    received: list[tuple[int, bytes]] = []
    done = threading.Event()

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        received.append(peer.read_frame())
        done.wait(30)  # never answers the close, keeps the connection open

    server = serve(script)
    ws = connect(server, close_timeout=0.1)
    ws.close(1000, "done")  # returns (pytest's timeout would catch a hang)
    done.set()
    assert received == [(OP_CLOSE, struct.pack("!H", 1000) + b"done")]
    with pytest.raises(ConnectionClosed):
        ws.recv()


def test_close_reads_the_servers_close_frame(serve):
    def script(peer: Peer) -> None:
        peer.accept_websocket()
        assert peer.read_frame()[0] == OP_CLOSE
        peer.frame(OP_TEXT, b"late output")  # still allowed before the server's close
        peer.frame(OP_CLOSE, struct.pack("!H", 1000))

    ws = connect(serve(script))
    ws.close()
    with pytest.raises(ConnectionClosed):
        ws.recv()


# --- HTTP ---------------------------------------------------------------------------------------


def answer(peer: Peer, body: bytes = b"{}", status: str = "200 OK") -> None:
    peer.conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                      .encode() + body)


def read_request(peer: Peer) -> str:
    head = peer.read_until(b"\r\n\r\n").decode()
    length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")),
                  0)
    peer.read_exactly(length)
    return head.split("\r\n")[0]


def http_client(server: Server) -> HttpClient:
    return HttpClient(Endpoint(unix_path=str(server.path)), timeout=10, connect_timeout=5)


def test_a_connection_closed_while_idle_is_replaced_before_a_post(serve):
    requests: list[str] = []
    idle_closed = threading.Event()

    def first(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer)
        peer.conn.close()  # the keep-alive timer ran out
        idle_closed.set()

    def second(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer, b'{"id": "c1"}', "201 Created")

    client = http_client(serve(first, second))
    assert client.request("GET", "/containers/list").status == 200
    assert idle_closed.wait(10)
    response = client.request("POST", "/containers/create", b"{}")
    assert (response.status, response.content) == (201, b'{"id": "c1"}')
    assert requests == ["GET /containers/list HTTP/1.1", "POST /containers/create HTTP/1.1"]


def test_a_post_the_server_dropped_unanswered_is_not_sent_again(serve):
    requests: list[str] = []

    def dropping(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer)
        requests.append(read_request(peer))  # the POST arrives, and the server goes away without answering

    def spare(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer)

    server = serve(dropping, spare)
    client = http_client(server)
    assert client.request("GET", "/version").status == 200
    with pytest.raises(HttpError, match="may or may not have been applied"):
        client.request("POST", "/containers/c1/stop")
    assert requests == ["GET /version HTTP/1.1", "POST /containers/c1/stop HTTP/1.1"]
    assert client.request("GET", "/version").status == 200  # a new connection for the next request


def test_an_idempotent_request_the_server_dropped_is_retried_once(serve):
    requests: list[str] = []

    def dropping(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer)
        requests.append(read_request(peer))

    def answering(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer, b"[]")

    server = serve(dropping, answering)
    client = http_client(server)
    assert client.request("GET", "/version").status == 200
    assert client.request("GET", "/containers/list").content == b"[]"
    assert requests == ["GET /version HTTP/1.1", "GET /containers/list HTTP/1.1", "GET /containers/list HTTP/1.1"]


def test_a_broken_answer_is_an_http_error(serve):
    def script(peer: Peer) -> None:
        read_request(peer)
        peer.conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

    with pytest.raises(HttpError, match="unexpected answer"):
        http_client(serve(script)).request("GET", "/version")


# --- one readable line ------------------------------------------------------------------------


def test_wire_errors_become_one_klee_error(serve, tmp_path):
    def broken_stream(peer: Peer) -> None:
        peer.accept_websocket()
        peer.frame(OP_TEXT, b"x", rsv=0x20)
        peer.read_frame()

    server = serve(broken_stream)
    client = Client(Settings(host=f"http://{server.path}"))
    with pytest.raises(ConnectionFailed, match=r"connection to kleened lost: .*reserved bits"), \
            client.stream("/exec/start") as ws:
        ws.recv()
    missing = Client(Settings(host=f"http://{tmp_path}/nothing.sock"))
    with pytest.raises(ConnectionFailed, match="unable to connect to kleened"):
        missing.get("/version")


def test_klee_prints_a_wire_error_as_one_line_without_traceback(serve):
    def script(peer: Peer) -> None:
        read_request(peer)
        peer.conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")

    server = serve(script)
    proc = subprocess.run([sys.executable, "-m", "klee", "--host", f"http://{server.path}", "volume", "ls"],
                          capture_output=True, text=True, timeout=60, env={"HOME": "/nonexistent", "PATH": "/usr/bin"})
    assert proc.returncode == 125 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Content-Length" in proc.stderr, proc.stderr


def test_a_request_that_failed_before_its_first_byte_is_sent_again(serve, monkeypatch):
    """The server closes the kept-alive connection just after klee checked it: the POST fails
    on its first byte (EPIPE), nothing reached the server, so it is safe to send it again."""
    requests: list[str] = []
    idle_closed = threading.Event()

    def first(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer)
        peer.conn.shutdown(socket.SHUT_RDWR)
        idle_closed.set()

    def second(peer: Peer) -> None:
        requests.append(read_request(peer))
        answer(peer, b'{"id": "c1"}', "201 Created")

    client = http_client(serve(first, second))
    assert client.request("GET", "/version").status == 200
    assert idle_closed.wait(10)
    monkeypatch.setattr("klee.wire.http._peer_closed", lambda sock: False)  # the race: checked before the close
    assert client.request("POST", "/containers/create", b"{}").status == 201
    assert requests == ["GET /version HTTP/1.1", "POST /containers/create HTTP/1.1"]


@pytest.mark.parametrize("round_", range(3))
def test_pongs_and_stdin_frames_from_two_threads_never_interleave(serve, round_):
    """klee's stdin pump sends from its own thread while the reader answers pings: every frame
    must reach the server whole (random jitter between sends, bounded rounds)."""
    import random

    frames: list[tuple[int, bytes]] = []
    pings = 200

    def script(peer: Peer) -> None:
        peer.accept_websocket()
        for n in range(pings):
            peer.frame(OP_PING, n.to_bytes(2, "big"))
        while sum(op == OP_PONG for op, _ in frames) < pings or sum(op == OP_BINARY for op, _ in frames) < 200:
            frames.append(peer.read_frame())
        peer.frame(OP_CLOSE, struct.pack("!H", 1000))
        peer.read_frame()

    ws = connect(serve(script), ping_interval=None)
    rng = random.Random(round_)

    def pump() -> None:
        for n in range(200):
            ws.send(b"x" * rng.randint(1, 300) + n.to_bytes(2, "big"))
            if rng.random() < 0.1:
                threading.Event().wait(rng.random() / 1000)

    sender = threading.Thread(target=pump)
    sender.start()
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=30)
    sender.join(10)
    assert [p for op, p in frames if op == OP_PONG] == [n.to_bytes(2, "big") for n in range(pings)]
    assert [p[-2:] for op, p in frames if op == OP_BINARY] == [n.to_bytes(2, "big") for n in range(200)]
