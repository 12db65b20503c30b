"""The build context: the directory COPY reads from, its Dockerfile and its .dockerignore.

Two ways in:
- *path* (upstream's): `ImageBuildConfig.context` is an absolute directory on the daemon's host, as upstream klee
  sends it; the Dockerfile path is relative to it.
- *upload* (extension, `context_upload: true`): the client streams a tar of the context after the config frame;
  `uploaded_context` writes it to a private temporary file (at most `max_bytes`), extracts it with the rules for
  hostile archives into a private directory, and removes both when the build ends, whatever happens.

The Dockerfile is looked up *inside* the context (`../../etc/shadow` cannot make parse errors echo a host file),
and so is .dockerignore.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import trio

from kleene_protocol.dockerignore import DockerIgnore
from kleene_protocol.dockerignore import parse as parse_ignore
from kleene_protocol.ids import new_id

from ...platform.posix.rootpath import PathEscape, read_text_in_root
from .dockerfile import Dockerfile, DockerfileError, parse

MiB = 1 << 20
MAX_DOCKERFILE = 4 * MiB
MAX_CONTEXT = 4096 * MiB  # default cap of an uploaded context, compressed and extracted


class ContextError(Exception):
    """The uploaded context could not be received or unpacked; `str()` is for the client."""


class Unpacker(Protocol):
    def unpack(self, archive: Path, dest: Path, *, max_bytes: int, check: object) -> int: ...


def read_dockerfile(context: Path, name: str) -> Dockerfile:
    """Read and parse the Dockerfile `name` of `context`. Raises `DockerfileError` with the text the log shows."""
    shown = os.path.join(str(context), name)
    if not context.is_absolute() or not context.is_dir():
        raise DockerfileError(f"Could not open Docker file {shown}: the context is not a directory on the host")
    try:
        text = read_text_in_root(context, name or "Dockerfile", limit=MAX_DOCKERFILE + 1)
    except PathEscape as exc:
        raise DockerfileError(f"Could not open Docker file {shown}: {exc}") from None
    if text is None:
        raise DockerfileError(f"Could not open Docker file {shown}: no such file")
    if len(text) > MAX_DOCKERFILE:
        raise DockerfileError(f"Could not open Docker file {shown}: larger than {MAX_DOCKERFILE} bytes")
    return parse(text)


def read_ignore(context: Path) -> DockerIgnore:
    """The context's .dockerignore rules (none when it has no such file)."""
    try:
        text = read_text_in_root(context, ".dockerignore", limit=MAX_DOCKERFILE)
    except PathEscape:
        text = None
    return parse_ignore(text or "")


@contextlib.asynccontextmanager
async def uploaded_context(
    chunks: AsyncIterator[bytes], *, tmp_dir: Path, files: Unpacker, max_bytes: int = MAX_CONTEXT
) -> AsyncIterator[Path]:
    """Receive a context tar from `chunks` and extract it; yield the directory. Raises `ContextError`."""
    tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    workdir = tmp_dir / f"build-context-{new_id()}"
    workdir.mkdir(mode=0o700)
    try:
        archive, root = workdir / "context.tar", workdir / "context"
        received = 0
        async with await trio.open_file(archive, "wb") as out:
            async for chunk in chunks:
                received += len(chunk)
                if received > max_bytes:
                    raise ContextError(f"build context larger than {max_bytes} bytes")
                await out.write(chunk)
        if received == 0:
            raise ContextError("no build context was uploaded")
        try:
            await trio.to_thread.run_sync(
                lambda: files.unpack(archive, root, max_bytes=max_bytes, check=trio.from_thread.check_cancelled)
            )
        except ValueError as exc:
            raise ContextError(f"could not unpack the build context: {exc}") from None
        archive.unlink()
        yield root
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, workdir, True)
