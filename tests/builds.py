"""Build helpers shared by the build tests: a build over `/images/build` as upstream klee frames it, what it sent,
running an image's command, and what the store holds (read from the daemon's SQLite store, which WAL lets us read).
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.daemon import Daemon
from tests.wsapi import Stream, collect, connect, exec_stream

SNAPSHOT = "--> Snapshot created: @"
CACHED = "--> Using cache"


@dataclass
class Build:
    stream: Stream

    @property
    def build_id(self) -> str:
        """The id the starting message announced (the build container's)."""
        starting = self.stream.starting
        assert starting is not None, self.stream
        return starting["data"]

    @property
    def image_id(self) -> str:
        """The image the build made: the build's id, or the existing image an unchanged rebuild returned."""
        return self.close[2] if self.ok else self.build_id

    @property
    def log(self) -> list[str]:
        """The frames between the starting message and the close, as upstream's tests see them."""
        return [f if isinstance(f, str) else f.decode() for f in self.stream.frames[1:]]

    @property
    def ok(self) -> bool:
        return self.stream.close_code == 1000

    @property
    def snapshots(self) -> list[str]:
        return [line.removeprefix("--> Snapshot created: ") for line in self.log if line.startswith(SNAPSHOT)]

    @property
    def close(self) -> tuple[int | None, str, str]:
        reason = self.stream.close_reason or {}
        return self.stream.close_code, reason.get("message", ""), reason.get("data", "")


def config(ctx: Path, **overrides: Any) -> dict[str, Any]:
    """What upstream klee sends for `klee build <ctx>` (network driver host), with overrides."""
    container = {"name": None, "cmd": None, "image": None, "user": "", "env": [], "mounts": [], "jail_param": [],
                 "network_driver": "host", **overrides.pop("container_config", {})}
    return {"context": str(ctx), "dockerfile": "Dockerfile", "tag": "", "quiet": "false", "cleanup": True,
            "buildargs": {}, "container_config": container, "networks": [], **overrides}


def build(daemon: Daemon, ctx: Path, dockerfile: str | None = None, files: dict[str, str] | None = None,
          **overrides: Any) -> Build:
    ctx.mkdir(parents=True, exist_ok=True)
    if dockerfile is not None:
        (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    with connect(daemon, "/images/build") as ws:
        ws.send(json.dumps(config(ctx, **overrides)))
        return Build(collect(ws, timeout=120))


def built(daemon: Daemon, ctx: Path, dockerfile: str, **kw: Any) -> Build:
    result = build(daemon, ctx, dockerfile, **kw)
    assert result.ok, [*result.log, str(result.stream.close_reason)]
    if CACHED not in result.log:
        assert result.close[2] == result.build_id  # a new image has the build's id
    return result


def run(api, daemon: Daemon, image: str, cmd: list[str] | None = None) -> str:
    """Output of a container from `image` (its own command unless `cmd`); the container is removed."""
    body = {"image": image, "network_driver": "host", **({"cmd": cmd} if cmd else {})}
    r = api.post("/containers/create", json=body)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    stream = exec_stream(daemon, api.post("/exec/create", json={"container_id": cid}).json()["id"])
    api.delete(f"/containers/{cid}")
    return stream.text


def builders(api) -> list[str]:
    return [c["name"] for c in api.get("/containers/list?all=true").json() if (c["name"] or "").startswith("builder_")]


def stored(daemon: Daemon, kind: str) -> list[dict]:
    db = sqlite3.connect(f"file:{daemon.state_root / 'metadata.sqlite'}?mode=ro", uri=True)
    try:
        return [json.loads(doc) for (doc,) in db.execute("SELECT doc FROM objects WHERE kind = ?", (kind,))]
    finally:
        db.close()


def unreferenced_layers(daemon: Daemon) -> set[str]:
    on_disk = {p.name for p in (daemon.state_root / "layers").iterdir() if not p.name.startswith(".")}
    used = {layer for kind in ("image", "container") for obj in stored(daemon, kind) for layer in obj["layers"]}
    return on_disk - used


def tar_of(files: dict[str, str | bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buffer.getvalue()


def upload(daemon: Daemon, archive: bytes, end: str | bytes = b"", **overrides: Any) -> Build:
    with connect(daemon, "/images/build") as ws:
        ws.send(json.dumps({**config(Path("/nonexistent"), **overrides), "context_upload": True}))
        for offset in range(0, len(archive), 65536):
            ws.send(archive[offset : offset + 65536])
        ws.send(end)
        return Build(collect(ws))
