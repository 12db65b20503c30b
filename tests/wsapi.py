"""Test-side helpers for the daemon's WebSocket endpoints and common REST sequences."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, unix_connect

from tests.daemon import Daemon
from tests.rootfs import file_url, session_tarball


@dataclass
class Stream:
    """What a WebSocket stream sent: the frames after the config, and the close frame."""

    frames: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: dict[str, Any] | None = None

    @property
    def starting(self) -> dict[str, Any] | None:
        if self.frames and isinstance(self.frames[0], str) and self.frames[0].startswith('{"msg_type":"starting"'):
            return json.loads(self.frames[0])
        return None

    @property
    def output(self) -> bytes:
        """Everything after the starting message, as bytes."""
        body = self.frames[1:] if self.starting else self.frames
        return b"".join(f if isinstance(f, bytes) else f.encode() for f in body)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


def connect(daemon: Daemon, endpoint: str) -> ClientConnection:
    return unix_connect(str(daemon.socket), uri=f"ws://localhost{endpoint}", max_size=2**24, open_timeout=30)


def collect(ws: ClientConnection, timeout: float = 120) -> Stream:
    stream = Stream()
    try:
        while True:
            stream.frames.append(ws.recv(timeout=timeout))
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    stream.close_code = ws.close_code
    stream.close_reason = json.loads(ws.close_reason) if ws.close_reason else None
    return stream


def run_stream(daemon: Daemon, endpoint: str, config: dict[str, Any] | str, timeout: float = 120) -> Stream:
    with connect(daemon, endpoint) as ws:
        ws.send(config if isinstance(config, str) else json.dumps(config))
        return collect(ws, timeout)


def create_image(daemon: Daemon, tag: str = "", **options: Any) -> str:
    """A busybox image from the test tarball; returns its id."""
    tarball = session_tarball(daemon.workdir)
    config = {"method": "fetch", "url": file_url(tarball), "tag": tag, **options}
    stream = run_stream(daemon, "/images/create", config)
    assert stream.close_code == 1000, stream
    assert stream.close_reason is not None
    return stream.close_reason["data"]


def exec_stream(daemon: Daemon, exec_id: str, *, attach: bool = True, start_container: bool | str = True,
                send: list[str | bytes] | None = None, timeout: float = 60, multiplex: bool | None = None) -> Stream:
    config: dict[str, Any] = {"exec_id": exec_id, "attach": attach, "start_container": start_container}
    if multiplex is not None:
        config["multiplex"] = multiplex
    with connect(daemon, "/exec/start") as ws:
        ws.send(json.dumps(config))
        for frame in send or []:
            ws.send(frame)
        return collect(ws, timeout)
