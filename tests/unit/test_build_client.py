"""`klee build` against a scripted WebSocket: the config frame it sends, the uploaded context, what it prints."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from klee import config as klee_config
from klee.cli import cli
from klee.connection import Client
from klee.errors import KleeError
from klee.session import Session
from klee.wire.websocket import ConnectionClosed
from kleene_protocol.models import ImageBuildConfig


class FakeSocket:
    """Records what klee sends; replies with `frames`, then closes with `close`."""

    def __init__(self, frames: list[str], close: tuple[int, dict[str, str]]) -> None:
        self.sent: list[str | bytes] = []
        self.frames = list(frames)
        self.close = close

    def send(self, frame: str | bytes) -> None:
        self.sent.append(frame)

    def recv(self) -> str:
        if self.frames:
            return self.frames.pop(0)
        code, reason = self.close
        raise ConnectionClosed(code, json.dumps(reason))


@pytest.fixture(autouse=True)
def no_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(klee_config, "SYSTEM_CONFIG", str(tmp_path / "etc-klee.yaml"))


def klee(monkeypatch, socket: FakeSocket, *args: str) -> Any:
    @contextlib.contextmanager
    def stream(self: Client, endpoint: str) -> Iterator[FakeSocket]:
        assert endpoint == "/images/build"
        yield socket

    monkeypatch.setattr(Client, "stream", stream)
    return CliRunner().invoke(cli, list(args), obj=Session(environ={}))


def ok_socket(*frames: str) -> FakeSocket:
    return FakeSocket(['{"msg_type":"starting","message":"","data":"abcdefabcdef"}', *frames],
                      (1000, {"msg_type": "closing", "message": "image created", "data": "abcdefabcdef"}))


def sent_config(socket: FakeSocket) -> dict[str, Any]:
    first = socket.sent[0]
    assert isinstance(first, str)
    msgspec.json.decode(first, type=ImageBuildConfig)  # what kleened decodes
    return json.loads(first)


def test_build_sends_upstreams_keys_plus_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KLEE_AUTH_FILE", str(tmp_path / "no-credentials.json"))
    socket = ok_socket("Step 1/2 : FROM base", "hello\n", "--> Using cache", "--> Snapshot created: @0123456789ab")
    result = klee(monkeypatch, socket, "build", "-t", "web:1", "--build-arg", "A=x=y", "-e", "E=1", "-u", "www",
                  "-m", "vol:/data", "-J", "allow.raw_sockets", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sent_config(socket) == {
        "context": str(tmp_path), "dockerfile": "Dockerfile", "tag": "web:1", "quiet": False, "cleanup": False,
        "buildargs": {"A": "x=y"}, "networks": [], "cache": True, "context_upload": False, "pull": True,
        "credentials": {}, "container_config": {"name": None, "cmd": None, "image": None, "user": "www", "env": ["E=1"],
                             "mounts": [{"type": "volume", "source": "vol", "destination": "/data",
                                         "read_only": False}],
                             "jail_param": ["allow.raw_sockets"], "network_driver": "host"},
    }
    assert result.output.splitlines() == [
        "Started to build image with ID abcdefabcdef", "Step 1/2 : FROM base", "hello", "--> Using cache",
        "--> Snapshot created: @0123456789ab", "", "image created", "abcdefabcdef"]


def test_build_options(monkeypatch, tmp_path):
    socket = ok_socket()
    result = klee(monkeypatch, socket, "image", "build", "--no-cache", "--rm", "-q", "-f", "other", "--from", "img",
                  "-n", "net", "--ip", "10.0.0.5", str(tmp_path))
    assert result.exit_code == 0, result.output
    config = sent_config(socket)
    assert (config["cache"], config["cleanup"], config["quiet"], config["dockerfile"]) == (False, True, True, "other")
    assert config["container_config"]["image"] == "img" and config["container_config"]["network_driver"] == "ipnet"
    assert config["networks"] == [{"container": "", "network": "net", "ip_address": "10.0.0.5",
                                   "ip_address6": "<auto>"}]
    bad = klee(monkeypatch, ok_socket(), "build", "--build-arg", "NOEQUALS", str(tmp_path))
    assert "invalid build-arg 'NOEQUALS'" in bad.exception.message


def test_upload_sends_the_context_without_ignored_files(monkeypatch, tmp_path):
    (tmp_path / "sub").mkdir()
    for rel, text in {"Dockerfile": "FROM x\n", ".dockerignore": "*.secret\nsub\nDockerfile\n", "a.txt": "a",
                      "k.secret": "k", "sub/s": "s"}.items():
        (tmp_path / rel).write_text(text)
    socket = ok_socket()
    result = klee(monkeypatch, socket, "build", "--upload", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sent_config(socket)["context_upload"] is True
    chunks = socket.sent[1:]
    assert chunks[-1] == b"" and all(isinstance(c, bytes) and len(c) <= 256 * 1024 for c in chunks)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:  # type: ignore[arg-type]
        assert sorted(tar.getnames()) == [".dockerignore", "Dockerfile", "a.txt"]


def test_upload_is_the_default_over_tcp(monkeypatch, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    socket = ok_socket()
    result = klee(monkeypatch, socket, "--host", "http://127.0.0.1:8085", "build", str(tmp_path))
    assert result.exit_code == 0 and sent_config(socket)["context_upload"] is True
    (tmp_path / "sub").mkdir()
    outside = klee(monkeypatch, ok_socket(), "build", "--upload", "-f", "../Dockerfile", str(tmp_path / "sub"))
    assert "the Dockerfile must be inside" in outside.exception.message


@pytest.mark.parametrize(("data", "line"), [
    ("@0123456789ab", "Failed to build image abcdefabcdef. Most recent snapshot is @0123456789ab"),
    ("no snapshots available", "Failed to build image abcdefabcdef (no snapshots available)"),
    ("", "Failed to build image abcdefabcdef"),
])
def test_a_failed_build_exits_1(monkeypatch, tmp_path, data, line):
    socket = FakeSocket(['{"msg_type":"starting","message":"","data":"abcdefabcdef"}', "oops"],
                        (1011, {"msg_type": "error", "message": "image build failed", "data": data}))
    result = klee(monkeypatch, socket, "build", str(tmp_path))
    assert isinstance(result.exception, KleeError)
    assert (result.exception.exit_code, result.exception.message) == (1, line)
    assert "oops" in result.output


def test_a_dockerfile_error(monkeypatch, tmp_path):
    socket = FakeSocket(['{"msg_type":"starting","message":"","data":""}', "error in 'X': invalid instruction"],
                        (1011, {"msg_type": "error", "message": "failed to process Dockerfile", "data": ""}))
    result = klee(monkeypatch, socket, "build", str(tmp_path))
    assert result.output.splitlines()[0] == "error in 'X': invalid instruction"
    assert (result.exception.exit_code, result.exception.message) == (1, "failed to process Dockerfile")


def test_build_is_registered(monkeypatch):
    for args in (["build", "--help"], ["image", "build", "--help"]):
        result = CliRunner().invoke(cli, args, obj=Session(environ={}))
        assert result.exit_code == 0 and "--no-cache" in result.output
    root = CliRunner().invoke(cli, ["--help"], obj=Session(environ={}))
    assert "Shortcut for 'klee image build'." in root.output


def test_context_archive_is_lazy(tmp_path: Path):
    from klee.commands.build import context_archive

    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "big").write_bytes(b"\0" * (3 * 256 * 1024))
    chunks = list(context_archive(tmp_path, "Dockerfile"))
    assert len(chunks) >= 1 and sum(map(len, chunks)) > 0


PATTERN_PIECES = ["a", "b", "ab", "*", "?", "**", "/", "[a-b]", "[!a]", "[]a]", "\\*", ".", "..", "x["]
