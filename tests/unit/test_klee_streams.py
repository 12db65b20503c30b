"""klee's WebSocket sessions against an in-process fake (a websockets server on a temporary unix socket)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from click.testing import CliRunner
from websockets.sync.server import ServerConnection, unix_serve

from klee import config
from klee.cli import cli
from klee.config import Settings
from klee.connection import Client
from klee.errors import KleeError
from klee.printing import Output
from klee.session import Session
from klee.streams import resize_frame, start_exec
from kleene_protocol import models
from kleene_protocol.codec import decode
from kleene_protocol.websocket import WindowSize, close_reason, starting

Handler = Callable[[ServerConnection, dict[str, Any]], None]


def exited(exec_id: str, code: int, container: bool = True) -> str:
    if container:
        return close_reason("closing", f"executable {exec_id} and its container exited with exit-code {code}")
    return close_reason("closing", f"{exec_id} has exited with exit-code {code}")


class FakeStreams:
    """A websockets server whose per-endpoint handlers receive the decoded config frame."""

    def __init__(self, path: str) -> None:
        self.handlers: dict[str, Handler] = {}
        self.configs: list[dict[str, Any]] = []
        self.frames: list[str | bytes] = []
        self.server = unix_serve(self._serve, path)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _serve(self, websocket: ServerConnection) -> None:
        config = json.loads(websocket.recv())
        self.configs.append(config)
        self.handlers[websocket.request.path](websocket, config)


@pytest.fixture
def socket_path(tmp_path) -> str:
    return str(tmp_path / "kleened.sock")


@pytest.fixture
def streams(socket_path) -> Iterator[FakeStreams]:
    fake = FakeStreams(socket_path)
    yield fake
    fake.server.shutdown()
    fake.thread.join(timeout=5)


@pytest.fixture
def rest() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def klee(socket_path, rest, tmp_path, monkeypatch) -> Callable[..., Any]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path / "none.yaml"))

    def handler(request: httpx.Request) -> httpx.Response:
        rest.append((request.method, request.url.path))
        if request.url.path == "/containers/create":
            return httpx.Response(201, json={"id": "c0ffee000001"})
        if request.url.path == "/exec/create":
            return httpx.Response(201, json={"id": "e0ffee000001"})
        return httpx.Response(200, json={"id": "c0ffee000001"})

    def invoke(*args: str) -> Any:
        session = Session(environ={"KLEE_HOST": f"http://{socket_path}"}, transport=httpx.MockTransport(handler))
        return CliRunner().invoke(cli, list(args), obj=session)

    return invoke


def test_exec_streams_output_and_exits_with_the_process_code(streams, klee):
    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.send(b"\x01output\n")
        websocket.send(b"\x02an error \xff\n")
        websocket.send(b"\x01binary \xff\n")
        websocket.close(1000, exited(config["exec_id"], 3, container=False))

    streams.handlers["/exec/start"] = handler
    result = klee("exec", "abc", "/bin/sh", "-c", "exit 3")
    assert result.exit_code == 3
    # The process's streams on klee's, klee's own status lines on stderr: stdout is the process's alone.
    assert result.stdout_bytes == b"output\nbinary \xff\n"
    assert result.stderr_bytes.splitlines() == [
        b"created execution instance e0ffee000001",
        b"an error \xff",
        b"",
        b"e0ffee000001 has exited with exit-code 3",
    ]
    assert streams.configs == [{"exec_id": "e0ffee000001", "attach": True, "start_container": True, "multiplex": True}]
    assert msgspec.convert(streams.configs[0], models.ExecStartConfig).multiplex is True


def test_exec_with_a_tty_asks_for_one_stream(streams, klee):
    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.send(b"terminal output\r\n")
        websocket.close(1000, exited(config["exec_id"], 0, container=False))

    streams.handlers["/exec/start"] = handler
    result = klee("exec", "-t", "abc", "/bin/sh")
    assert result.exit_code == 0 and result.stdout_bytes == b"terminal output\r\n"
    assert "multiplex" not in streams.configs[0]  # the frame upstream's daemon knows


def test_exec_that_started_a_stopped_container_says_so_once(streams, klee):
    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.send(b"\x01hi\n")
        websocket.close(1000, exited(config["exec_id"], 0, container=True))

    streams.handlers["/exec/start"] = handler
    result = klee("exec", "stopped1", "echo", "hi")
    assert result.exit_code == 0 and result.stdout_bytes == b"hi\n"
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: container stopped1 was not running: exec started it with this command as its main process, "
        "so it stopped when the command ended"
    ]


def test_detached_start_succeeds_on_1001_only(streams, klee):
    streams.handlers["/exec/start"] = lambda websocket, config: websocket.close(
        1001, close_reason("closing", "succesfully started execution instance in detached mode")
    )
    result = klee("run", "-d", "FreeBSD")
    assert result.exit_code == 0
    assert result.output == "c0ffee000001\ncreated execution instance e0ffee000001\n"
    assert streams.configs[0]["attach"] is False

    streams.handlers["/exec/start"] = lambda websocket, config: websocket.close(
        1011, close_reason("error", "error starting exec instance")
    )
    result = klee("start", "-d", "abc")
    assert isinstance(result.exception, KleeError)
    assert result.exception.message == "error starting container: error starting exec instance"


def test_start_error_before_starting_message(streams, klee):
    streams.handlers["/exec/start"] = lambda websocket, config: websocket.close(
        1011, close_reason("error", "error starting exec instance")
    )
    result = klee("exec", "abc", "ls")
    assert result.exception.message == "error starting exec instance"


def test_close_without_a_reason_is_reported(streams, klee):
    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.close(1000, "")

    streams.handlers["/exec/start"] = handler
    assert klee("exec", "abc", "ls").exception.message == "ERROR! Connection closed unexpectedly."


@pytest.mark.parametrize(("container_exited", "requests"), [(True, ["DELETE"]), (False, ["POST", "DELETE"])])
def test_run_rm_removes_the_container(streams, klee, rest, container_exited, requests):
    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.close(1000, exited(config["exec_id"], 0, container=container_exited))

    streams.handlers["/exec/start"] = handler
    result = klee("run", "--rm", "FreeBSD", "true")
    assert result.exit_code == 0, result.output
    assert [method for method, _ in rest[2:]] == requests
    assert rest[-1] == ("DELETE", "/containers/c0ffee000001")


def test_interactive_stdin_goes_as_binary_frames(streams, socket_path, monkeypatch, capsysbinary):
    received: list[str | bytes] = []

    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        data = b""
        while b"\n" not in data:
            frame = websocket.recv()
            received.append(frame)
            data += frame if isinstance(frame, bytes) else frame.encode()
        websocket.send(b"\x01" + data if config.get("multiplex") else data)
        websocket.close(1000, exited(config["exec_id"], 4, container=False))

    streams.handlers["/exec/start"] = handler
    read_end, write_end = os.pipe()
    os.write(write_end, b"hello\n")
    client = Client(Settings(host=f"http://{socket_path}"))
    with os.fdopen(read_end, "rb") as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
        result = start_exec(client, Output(fancy=False), "e1", attach=True, interactive=True)
    os.close(write_end)
    assert result.exit_code == 4 and result.container_running
    assert b"".join(frame for frame in received if isinstance(frame, bytes)) == b"hello\n"
    assert all(isinstance(frame, bytes) for frame in received)
    captured = capsysbinary.readouterr()
    assert (captured.out, captured.err) == (b"hello\n", b"\ne1 has exited with exit-code 4\n")


def test_image_create_prints_progress_and_result(streams, klee):
    def handler(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.send("Succesfully fetched base system.\n")
        websocket.close(1000, close_reason("closing", "image created", "0a1b2c3d4e5f"))

    streams.handlers["/images/create"] = handler
    result = klee("image", "create", "-t", "base:1", "--no-dns", "fetch", "https://example.org/base.txz")
    assert result.exit_code == 0, result.output
    assert result.output == "Succesfully fetched base system.\n\nimage created\n0a1b2c3d4e5f\n"
    assert streams.configs == [{
        "method": "fetch", "url": "https://example.org/base.txz", "zfs_dataset": "", "tag": "base:1",
        "dns": False, "localtime": True, "update": False, "autotag": False,
    }]  # fmt: skip

    assert msgspec.convert(streams.configs[0], models.ImageCreateConfig).method == "fetch"

    def failing(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.close(1011, close_reason("error", "image creation failed: invalid dataset"))

    streams.handlers["/images/create"] = failing
    result = klee("image", "create", "zfs-copy", "zroot/nothing")
    assert result.exception.message == "image creation failed: invalid dataset"


def test_resize_frame_is_the_protocol_extension():
    frame = resize_frame(30, 100)
    assert json.loads(frame) == {"type": "resize", "rows": 30, "cols": 100}
    assert decode(frame, WindowSize) == WindowSize(rows=30, cols=100)


def test_error_reason_in_data_is_shown(streams, klee):
    streams.handlers["/exec/start"] = lambda websocket, config: websocket.close(
        1011, close_reason("error", "error starting exec instance", "container not found")
    )
    assert klee("exec", "abc", "ls").exception.message == "error starting exec instance: container not found"
    assert klee("start", "-d", "abc").exception.message == (
        "error starting container: error starting exec instance: container not found"
    )


def test_image_create_failure_is_printed_once(streams, klee):
    reason = "fetch-auto needs debootstrap: apt-get install debootstrap"

    def failing(websocket: ServerConnection, config: dict[str, Any]) -> None:
        websocket.send(starting())
        websocket.send("Looking for the host's system\n")
        websocket.send(reason)  # kleened sends the reason as a last frame, as upstream does
        websocket.close(1011, close_reason("error", f"image creation failed: {reason}"))

    streams.handlers["/images/create"] = failing
    result = klee("image", "create", "fetch-auto")
    assert result.stdout == "Looking for the host's system\n"
    assert result.exception.message == f"image creation failed: {reason}"
