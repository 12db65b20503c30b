"""OCI layer tar streams to and from layer directories, on any POSIX host.

Unpacking: the (gzip, zstd or plain) blob arrives as an async chunk stream, or as a blocking
stream that a worker thread reads (a pull's download, `unpack_blocking`); that thread
decompresses it, hashes the uncompressed tar (the layer's diff id) and extracts it with
`posix_tar`'s rules (paths resolved inside the layer, link checks, size caps), OCI whiteouts
turned into the storage's form by its `Whiteouts`.

Packing: the reverse, and deterministic, so that a layer's digest is stable and can be kept
(`measure`) and its bytes produced again later (`pack`): entries in sorted order, numeric
owners without names, whole-second times, no atime/ctime, PAX format, gzip without a name or
time at a fixed level. Deleted entries in the storage's form become `.wh.<name>` entries and
opaque directories get a `.wh..wh..opq` entry. Extended attributes are not exported, as they
are not imported.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import trio
import zstandard

from kleened.platform.base import Packed, Unpacked
from kleened.platform.posix import tar as posix_tar
from kleened.platform.posix.tar import OPAQUE, WHITEOUT, ExtractError, Limits
from kleened.platform.posix.threadstream import CHUNK, ChunkReader, prefetched, produced

GZIP_LEVEL = 6
_PACK_VERSION = f"tar1-zlib{zlib.ZLIB_RUNTIME_VERSION}-{GZIP_LEVEL}"  # what a kept digest depends on


class StorageWhiteouts(posix_tar.Whiteouts, Protocol):
    def is_whiteout(self, st: os.stat_result) -> bool: ...
    def is_opaque(self, directory: str) -> bool: ...


class TarLayerFiles:
    """`LayerFiles` (core.oci.interfaces) for directory layers with `whiteouts` as their form."""

    version = _PACK_VERSION

    def __init__(self, whiteouts: StorageWhiteouts, limits: Limits | None = None) -> None:
        self.whiteouts = whiteouts
        self.limits = limits or Limits()

    async def unpack(self, dest: Path, compression: str, chunks: AsyncIterator[bytes]) -> Unpacked:
        async with prefetched(chunks) as ahead:
            return await trio.to_thread.run_sync(functools.partial(self.unpack_blocking, dest, compression,
                                                                   ChunkReader(ahead)))

    def unpack_blocking(self, dest: Path, compression: str, raw: io.RawIOBase) -> Unpacked:
        hashed = _Hashing(_decompressed(raw, compression))
        stream = io.BufferedReader(hashed, CHUNK)
        writer = posix_tar.LayerWriter(os.path.realpath(dest), self.limits, _ignore, trio.from_thread.check_cancelled,
                                       os.geteuid() == 0, whiteouts=self.whiteouts)
        try:
            stats = posix_tar.extract_stream(stream, writer)
            while stream.read(CHUNK):  # the tar's end padding belongs to the diff id too
                pass
        except (zlib.error, zstandard.ZstdError) as exc:
            raise ExtractError(f"could not decompress layer: {exc}") from exc
        while raw.read(CHUNK):  # to its end, so that whatever the source checks there is checked
            pass
        return Unpacked("sha256:" + hashed.hasher.hexdigest(), stats.entries, stats.bytes)

    async def measure(self, source: Path, compression: str) -> Packed:
        return await trio.to_thread.run_sync(self._measure, source, compression)

    def _measure(self, source: Path, compression: str) -> Packed:
        sink = _HashSink()
        diff = self._write(source, compression, sink, trio.from_thread.check_cancelled)
        return Packed("sha256:" + sink.hasher.hexdigest(), sink.size, diff)

    @contextlib.asynccontextmanager
    async def pack(self, source: Path, compression: str) -> AsyncIterator[AsyncIterator[bytes]]:
        def job(out: Any) -> None:
            self._write(source, compression, out, trio.from_thread.check_cancelled)

        async with produced(job) as chunks:
            yield chunks

    def _write(self, source: Path, compression: str, out: Any, check: posix_tar.Check) -> str:
        """Write the layer's tar (compressed as asked) to `out`; return its diff id."""
        if compression not in ("", "gzip"):
            raise ValueError(f"cannot produce '{compression}' layers (gzip or plain tar)")
        target = _Gzip(out) if compression == "gzip" else out
        tar_hash = _HashTee(target)
        with tarfile.open(fileobj=tar_hash, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for info, data in _entries(Path(source), self.whiteouts):
                check()
                tar.addfile(info, data)
                if data is not None:
                    data.close()
        if isinstance(target, _Gzip):
            target.close()
        return "sha256:" + tar_hash.hasher.hexdigest()


def _entries(root: Path, whiteouts: StorageWhiteouts) -> Iterator[tuple[tarfile.TarInfo, BinaryIO | None]]:
    """The layer's entries in a fixed order: a directory, then its sorted children, depth first."""
    linked: dict[tuple[int, int], str] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        directory = root / rel if rel else root
        names = sorted(os.listdir(directory))
        if rel and whiteouts.is_opaque(str(directory)):
            yield _marker(f"{rel}/{OPAQUE}", os.lstat(directory)), None
        children = []
        for name in names:
            path = directory / name
            member = f"{rel}/{name}" if rel else name
            st = os.lstat(path)
            if whiteouts.is_whiteout(st):
                yield _marker(_whiteout_name(member), st), None
                continue
            info = _info(member, st)
            if info is None:
                continue
            data = None
            if stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in linked:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, linked[key], 0
                else:
                    linked[key] = member
                    data = open(path, "rb")  # noqa: SIM115 - closed by the writer after addfile
            elif stat.S_ISLNK(st.st_mode):
                info.linkname = os.readlink(path)
            yield info, data
            if stat.S_ISDIR(st.st_mode):
                children.append(member)
        pending.extend(reversed(children))


def _whiteout_name(member: str) -> str:
    head, _, name = member.rpartition("/")
    return f"{head}/{WHITEOUT}{name}" if head else f"{WHITEOUT}{name}"


def _marker(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uname, info.gname = 0o600, int(st.st_mtime), "", ""
    return info


def _info(member: str, st: os.stat_result) -> tarfile.TarInfo | None:
    info = tarfile.TarInfo(member)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None  # sockets
    info.mode = stat.S_IMODE(mode)
    info.uid, info.gid, info.uname, info.gname = st.st_uid, st.st_gid, "", ""
    info.mtime = int(st.st_mtime)
    return info


# --- stream plumbing ------------------------------------------------------------------------------


def _decompressed(raw: io.RawIOBase, compression: str) -> io.RawIOBase:
    if compression == "gzip":
        return _Gunzip(raw)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    if compression == "":
        return raw
    raise ExtractError(f"unsupported layer compression '{compression}'")


class _Gunzip(io.RawIOBase):
    """gzip decompression of a raw stream, members one after the other (as `gzip -d` does)."""

    def __init__(self, raw: io.RawIOBase) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(31)
        self._input = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._inflate.eof:
                rest = self._inflate.unused_data + self._input
                self._input = b""
                if not rest:
                    rest = self._raw.read(CHUNK) or b""
                    if not rest:
                        return 0
                self._inflate = zlib.decompressobj(31)
                self._input = rest
            if not self._input:
                self._input = self._raw.read(CHUNK) or b""
                if not self._input:
                    raise ExtractError("the layer's gzip stream ends early")
            out = self._inflate.decompress(self._input, len(buffer))
            self._input = self._inflate.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                return len(out)


class _Hashing(io.RawIOBase):
    def __init__(self, raw: io.RawIOBase) -> None:
        self._raw = raw
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self.hasher.update(memoryview(buffer)[:n])
        return n or 0


class _HashSink(io.RawIOBase):
    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return len(data)


class _HashTee(io.RawIOBase):
    """Hash what goes through on its way to `out`."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self.hasher = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.hasher.update(data)
        self._out.write(data)
        return len(data)


class _Gzip(io.RawIOBase):
    """gzip with a fixed header (no name, time 0): the same input always gives the same bytes."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._out.write(self._deflate.compress(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._out.write(self._deflate.flush())
        super().close()


def _ignore(*_args: object) -> None:
    return None
