"""Archives received for `load`: spooled to a private file, then read member by member.

The stream (a tar, or a gzip of one, as `docker save | gzip` makes) is written to a file under
`workdir` (mode 0600, at most `max_bytes` of tar) while it arrives, decompressed on the way,
so the archive is never held in memory; the members are then listed once (`tarfile`, in a
worker thread) and read at their offsets. Member symlinks (legacy `docker save` archives link
`<id>/layer.tar` to shared blobs) are followed inside the archive. The file is removed when the
block ends, whatever happened; a daemon killed meanwhile leaves it in the work directory, which
the start-up clears (`HostRootfs.cleanup`).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import tarfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import trio

GiB = 1024**3
CHUNK = 1 << 20
PREFIX = "load-"
_GZIP_MAGIC = b"\x1f\x8b"


class ArchiveError(ValueError):
    """The archive cannot be read; `str()` is for the client."""


class SpooledArchive:
    def __init__(self, path: Path, members: dict[str, tarfile.TarInfo]) -> None:
        self._path = path
        self._members = members

    def names(self) -> list[str]:
        return [name for name, info in self._members.items() if info.isreg()]

    def _resolve(self, name: str) -> tarfile.TarInfo:
        name = posixpath.normpath(name.lstrip("/")) if name else name
        for _ in range(16):
            info = self._members.get(name)
            if info is None:
                raise ArchiveError(f"the archive has no '{name}'")
            if not info.issym():
                if not info.isreg():
                    raise ArchiveError(f"'{name}' in the archive is not a file")
                return info
            name = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
        raise ArchiveError(f"too many symbolic links at '{name}' in the archive")

    def size(self, name: str) -> int:
        return self._resolve(name).size

    async def read(self, name: str, limit: int) -> bytes:
        info = self._resolve(name)
        if info.size > limit:
            raise ArchiveError(f"'{name}' in the archive is larger than {limit} bytes")
        return b"".join([chunk async for chunk in self.open(name)])

    async def open(self, name: str) -> AsyncIterator[bytes]:
        info = self._resolve(name)
        with open(self._path, "rb") as f:
            f.seek(info.offset_data)
            left = info.size
            while left:
                chunk = await trio.to_thread.run_sync(f.read, min(CHUNK, left))
                if not chunk:
                    raise ArchiveError(f"'{name}' is cut short in the archive")
                left -= len(chunk)
                yield chunk


class HostArchives:
    """`ArchiveFiles` (core.oci.interfaces): spools archives under `workdir`."""

    def __init__(self, workdir: Path, max_bytes: int = 64 * GiB) -> None:
        self.workdir = workdir
        self.max_bytes = max_bytes

    @contextlib.asynccontextmanager
    async def spooled(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[SpooledArchive]:
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.workdir / f"{PREFIX}{secrets.token_hex(6)}.tar"
        try:
            await self._receive(chunks, path)
            members = await trio.to_thread.run_sync(_index, path)
            yield SpooledArchive(path, members)
        finally:
            with trio.CancelScope(shield=True):
                path.unlink(missing_ok=True)

    async def _receive(self, chunks: AsyncIterator[bytes], path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            inflater: _Inflater | None = None
            written, first = 0, True
            async for chunk in chunks:
                if first and chunk[:2] == _GZIP_MAGIC:
                    inflater = _Inflater()
                first = False
                data = chunk if inflater is None else inflater.feed(chunk)
                written += len(data)
                if written > self.max_bytes:
                    raise ArchiveError(f"the archive is larger than {self.max_bytes} bytes")
                out.write(data)


class _Inflater:
    """gzip decompression, members one after the other, fed in pieces."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(31)

    def feed(self, data: bytes) -> bytes:
        out = []
        try:
            while data:
                out.append(self._inflate.decompress(data))
                data = b""
                if self._inflate.eof:
                    data = self._inflate.unused_data
                    self._inflate = zlib.decompressobj(31)
        except zlib.error as exc:
            raise ArchiveError(f"the archive's gzip stream is broken: {exc}") from None
        return b"".join(out)


def _index(path: Path) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                name = posixpath.normpath(info.name.lstrip("/"))
                if name.startswith("../") or name == "..":
                    raise ArchiveError(f"refusing archive member '{info.name}': it climbs out")
                members[name] = info
                if len(members) > 1_000_000:
                    raise ArchiveError("the archive has more than 1000000 members")
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"not a tar archive: {exc}") from None
    return members
