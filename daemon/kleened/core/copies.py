"""`cp`: paths of a container read and written as tar streams, running or stopped.

Each operation holds the container's lock from the path's resolution to the stream's end
(`Containers.files_of`): a stopped container's filesystem is mounted for the copy and unmounted
after it, shielded, so a client that goes away mid-copy leaves no mount behind; a running
container's mount cannot go (its teardown waits for the lock). Paths are as the container sees
them: a relative one starts at the container's working directory. The host side
(`ContainerFiles`) resolves them inside the container root, safe against symlink swaps.

A running container's volumes and its /etc/hosts are mounted in its own mount namespace, not
on its root as the daemon sees it: `cp` reads and writes the container's own filesystem
underneath them.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import AsyncIterator

from kleene_protocol.operations import ArchivePutResult, PathStat

from ..platform.base import ContainerFiles, CopyLimits, PathError
from .containers import Containers
from .errors import Internal, InvalidArgument, KleeneError, NotFound

MAX_PATH = 4096  # bytes, PATH_MAX


class Copies:
    def __init__(self, containers: Containers, files: ContainerFiles, limits: CopyLimits) -> None:
        self._containers = containers
        self._files = files
        self.limits = limits

    def _path(self, workdir: str, path: str) -> str:
        if not path:
            raise InvalidArgument("no path given")
        if "\0" in path or len(path.encode()) > MAX_PATH:
            raise InvalidArgument("invalid path: it holds a NUL byte or is longer than 4096 bytes")
        if path.startswith("/"):
            return path
        joined = posixpath.join(workdir or "/", path)
        return joined + "/" if path.endswith("/") and not joined.endswith("/") else joined

    async def stat(self, ident: str, path: str, *, follow: bool = False) -> PathStat:
        container_id = self._containers.get(ident).id
        async with self._containers.files_of(container_id) as (record, root):
            return await _translated(self._files.stat(root, self._path(record.workdir, path), follow))

    @contextlib.asynccontextmanager
    async def read(self, ident: str, path: str, *, follow: bool = False
                   ) -> AsyncIterator[tuple[PathStat, AsyncIterator[bytes]]]:
        """`path`'s stat and tar stream; the lock and the mount are held until the block ends."""
        container_id = self._containers.get(ident).id
        async with self._containers.files_of(container_id) as (record, root):
            try:
                async with self._files.read(root, self._path(record.workdir, path), follow) as (info, chunks):
                    yield info, _chunks_translated(chunks)
            except PathError as exc:
                raise _error(exc) from None

    async def write(self, ident: str, path: str, chunks: AsyncIterator[bytes]) -> ArchivePutResult:
        """Extract the tar `chunks` into the existing directory `path` of the container."""
        container_id = self._containers.get(ident).id
        async with self._containers.files_of(container_id) as (record, root):
            target = self._path(record.workdir, path)
            entries, size = await _translated(self._files.write(root, target, chunks, self.limits))
        return ArchivePutResult(entries=entries, bytes=size)


def _error(exc: PathError) -> KleeneError:
    if exc.kind == "missing":
        return NotFound(exc.message)
    if exc.kind == "invalid":
        return InvalidArgument(exc.message)
    return Internal(f"copy failed: {exc.message}")


async def _translated(awaitable):  # type: ignore[no-untyped-def]
    try:
        return await awaitable
    except PathError as exc:
        raise _error(exc) from None


async def _chunks_translated(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except PathError as exc:
        raise _error(exc) from None
