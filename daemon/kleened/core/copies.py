"""`cp`: paths of a container read and written as tar streams, running or stopped.

Each operation holds the container's lock from the path's resolution to the stream's end
(`Containers.files_of`): a stopped container's filesystem is mounted for the copy and unmounted
after it, shielded, so a client that goes away mid-copy leaves no mount behind; a running
container's mount cannot go (its teardown waits for the lock). Paths are as the container sees
them: a relative one starts at the container's working directory. The host side
(`ContainerFiles`) resolves them inside the container root, safe against symlink swaps.

A path under one of the container's mount destinations (a volume, a host directory or file)
is copied from or to that mount's source, as the container sees it whether it runs or not
(`_in_mount`): the source becomes the root the helper works in, so links inside a volume resolve
inside the volume. A path above a mount (`/` of a container with a volume on `/data`) is copied
from the container's own filesystem, where the mount's destination is an empty directory; so is
/etc/hosts, which the daemon provides at start.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec

from kleene_protocol.models import MountPoint
from kleene_protocol.operations import ArchivePutResult, PathStat

from ..platform.base import ContainerFiles, CopyLimits, PathError
from .containers import Containers
from .errors import Internal, InvalidArgument, KleeneError, NotFound
from .records import ContainerRecord

MAX_PATH = 4096  # bytes, PATH_MAX
T = TypeVar("T")


@dataclass(frozen=True)
class Place:
    """Where a container path is on the host: `path` inside `root`; `name` replaces the last
    component's name when the path is a mount's destination itself (the root of its source)."""

    root: Path
    path: str
    name: str = ""
    read_only: bool = False


def _in_mount(mounts: list[MountPoint], path: str, volume_path: Callable[[str], Path]) -> Place | None:
    """The mount whose destination holds `path` (the deepest one), as a place in its source."""
    normal = posixpath.normpath(path)
    suffix = "/." if path.endswith("/.") else "/" if path.endswith("/") else ""
    found = None
    for m in mounts:
        dest = posixpath.normpath(m.destination)
        if (normal == dest or normal.startswith(dest.rstrip("/") + "/")) and (
                found is None or len(dest) > len(posixpath.normpath(found.destination))):
            found = m
    if found is None:
        return None
    source = volume_path(found.source) if found.type == "volume" else Path(found.source)
    rest = posixpath.relpath(normal, posixpath.normpath(found.destination))
    name = posixpath.basename(posixpath.normpath(found.destination)) if rest == "." else ""
    if source.is_dir():
        return Place(source, "/" if rest == "." else "/" + rest + suffix, name, found.read_only)
    if rest != ".":
        raise NotFound(f"no such file or directory: '{path}'")
    return Place(source.parent, "/" + source.name, name, found.read_only)  # a file mount: that file only


class Copies:
    def __init__(self, containers: Containers, files: ContainerFiles, limits: CopyLimits,
                 volume_path: Callable[[str], Path]) -> None:
        self._containers = containers
        self._files = files
        self.limits = limits
        self._volume_path = volume_path

    def _place(self, record: ContainerRecord, root: Path, path: str) -> Place:
        full = self._path(record.workdir, path)
        return _in_mount(record.mounts, full, self._volume_path) or Place(root, full)

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
            place = self._place(record, root, path)
            return _named(await _translated(self._files.stat(place.root, place.path, follow)), place)

    @contextlib.asynccontextmanager
    async def read(self, ident: str, path: str, *, follow: bool = False
                   ) -> AsyncIterator[tuple[PathStat, AsyncIterator[bytes]]]:
        """`path`'s stat and tar stream; the lock and the mount are held until the block ends."""
        container_id = self._containers.get(ident).id
        async with self._containers.files_of(container_id) as (record, root):
            place = self._place(record, root, path)
            try:
                async with self._files.read(place.root, place.path, follow) as (info, chunks):
                    yield _named(info, place), _chunks_translated(chunks)
            except PathError as exc:
                raise _error(exc) from None

    async def write(self, ident: str, path: str, chunks: AsyncIterator[bytes]) -> ArchivePutResult:
        """Extract the tar `chunks` into the existing directory `path` of the container."""
        container_id = self._containers.get(ident).id
        async with self._containers.files_of(container_id) as (record, root):
            place = self._place(record, root, path)
            if place.read_only:
                raise InvalidArgument(f"'{path}' is on a read-only mount of the container")
            entries, size = await _translated(self._files.write(place.root, place.path, chunks, self.limits))
        return ArchivePutResult(entries=entries, bytes=size)


def _named(info: PathStat, place: Place) -> PathStat:
    return msgspec.structs.replace(info, name=place.name) if place.name else info


def _error(exc: PathError) -> KleeneError:
    if exc.kind == "missing":
        return NotFound(exc.message)
    if exc.kind == "invalid":
        return InvalidArgument(exc.message)
    return Internal(f"copy failed: {exc.message}")


async def _translated(awaitable: Awaitable[T]) -> T:
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
