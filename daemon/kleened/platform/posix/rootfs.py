"""Where a new base image's files come from, on any POSIX host: downloads, tar archives and host
directories (`HostRootfs`, core's `RootfsSource`; `platform.linux.rootfs` and
`platform.freebsd.images` add what only their system has: debootstrap, base.txz, freebsd-update).

Blocking work (extraction, copies) runs in a worker thread so the event loop keeps answering
WebSocket pings (klee gives up after 20 s without a pong); the thread polls for cancellation
between entries, so a client that disconnects stops it within one entry. Failures meant for the
client are `RootfsError` (a ValueError) with a message; host trouble surfaces as `OSError` or
`HostCommandError`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import stat
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import trio

from kleened import faults
from kleened.platform.base import Count, Emit
from kleened.platform.posix import tar as posix_tar
from kleened.platform.posix.download import DownloadError, download
from kleened.platform.posix.tar import Limits

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_FETCH_REPORT = 32 * MiB  # progress line every 32 MiB when the size is unknown


class RootfsError(ValueError):
    """A creation step failed for a reason the client should read (`str()`)."""


class HostRootfs:
    """Fills layers for image creation; see the module docstring. A platform's subclass says
    how to see mounts (`mounted_below`) and adds what only it has (`bootstrap`, `update`).

    `workdir` holds downloads while they are extracted (under the state root, so a download
    never fills another filesystem). `limits` caps what one creation may write.
    """

    def __init__(self, workdir: Path, *, limits: Limits | None = None) -> None:
        self.workdir = workdir
        self.limits = limits or Limits()

    def mounted_below(self, path: Path) -> bool:
        """Whether anything is mounted at or below `path` (cleanup never deletes through a mount)."""
        raise NotImplementedError

    async def bootstrap(self, dest: Path, output: Emit) -> tuple[str, str]:
        raise RootfsError("fetch-auto is not available on this host")

    async def update(self, root: Path, output: Emit) -> None:
        raise NotImplementedError("'update' runs freebsd-update, which this host's images do not have")

    def cleanup(self) -> None:
        """At start-up: what the work dir holds is a previous daemon's (downloads, uploaded build
        contexts a crash interrupted): delete it all, never through a mount."""
        if not self.workdir.is_dir():
            return
        for entry in self.workdir.iterdir():
            try:
                if self.mounted_below(entry):
                    log.warning("leaving %s: it has mounts below it", entry)
                elif entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as e:
                log.warning("could not delete %s: %s", entry, e)

    # --- fetch -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def fetched(self, url: str, output: Emit) -> AsyncIterator[Path]:
        """A local path holding the archive at `url` (http, https or file) while the block runs.

        A download goes to a private file under `workdir` that is removed afterwards; a
        `file://` URL is read where it is.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise RootfsError(f"could not fetch file from url: file URLs must be local, not '{parts.netloc}'")
            path = Path(urllib.parse.unquote(parts.path))
            if not path.is_file():
                raise RootfsError(f"could not fetch file from url: {path} is not a file")
            yield path
            return
        if parts.scheme not in ("http", "https"):
            raise RootfsError(f"could not fetch file from url: unsupported scheme '{parts.scheme}'")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.workdir / f"download-{secrets.token_hex(6)}"
        try:
            await self._download(url, path, output)
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def _download(self, url: str, path: Path, output: Emit) -> None:
        report = {"next": 0, "step": _FETCH_REPORT}

        async def progress(received: int, total: int | None) -> None:
            if received == 0:
                report["step"] = report["next"] = max(total // 10, MiB) if total else _FETCH_REPORT
                await output(f"Fetching {url}" + (f" ({total / MiB:.1f} MiB)" if total else "") + "\n")
                return
            faults.point("image.fetch.downloading")
            if received >= report["next"]:
                report["next"] += report["step"]
                share = f" ({100 * received // total}%)" if total else ""
                await output(f"Fetched {received / MiB:.1f} MiB{share}\n")

        try:
            await download(url, path, max_bytes=self.limits.max_bytes, progress=progress)
        except DownloadError as exc:
            raise RootfsError(f"could not fetch file from url: {exc}") from None

    # --- fill a layer ----------------------------------------------------------------------

    async def extract(self, archive: Path, dest: Path, on_count: Count) -> int:
        """Extract `archive` into the layer `dest` (see `posix_tar`); return the entries written."""
        job = functools.partial(
            posix_tar.extract, archive, dest, limits=self.limits, on_count=_from_thread(on_count),
            check=trio.from_thread.check_cancelled,
        )
        stats = await trio.to_thread.run_sync(job)
        log.info("archive extracted", extra={"archive": str(archive), "entries": stats.entries,
                                             "bytes": stats.bytes, "skipped": stats.skipped})
        return stats.entries

    async def copy_dir(self, source: str, dest: Path, on_count: Count) -> int:
        """Copy the host directory `source` into the layer `dest`; return the entries written."""
        src = Path(source)
        if not src.is_absolute() or not src.is_dir():
            raise RootfsError(f"'{source}' is not an absolute path to a directory on the daemon's host")
        real, layer = src.resolve(), dest.resolve()
        if layer == real or layer.is_relative_to(real):
            raise RootfsError(f"'{source}' contains the daemon's state directory; refusing to copy it into itself")
        job = functools.partial(
            copy_tree, real, dest, limits=self.limits, on_count=_from_thread(on_count),
            check=trio.from_thread.check_cancelled,
        )
        return (await trio.to_thread.run_sync(job)).entries

    async def add_host_file(self, host_path: str, dest: Path, path_in_root: str) -> bool:
        """Copy a host file into the layer, never through the image's own symlinks."""
        return await trio.to_thread.run_sync(copy_host_file, host_path, dest, path_in_root)


def _from_thread(on_count: Count) -> Callable[[int], None]:
    """A progress callback for a worker thread that runs `on_count` in the trio loop."""

    def report(count: int) -> None:
        trio.from_thread.run(on_count, count)

    return report


def copy_tree(
    source: str | Path,
    root: str | Path,
    *,
    limits: Limits | None = None,
    on_count: Callable[[int], None] | None = None,
    check: Callable[[], None] | None = None,
    same_owner: bool | None = None,
) -> posix_tar.Stats:
    """Copy the host directory `source` into the empty directory `root`, like `cp -a -x`.

    Symlinks are copied as links, hard links inside `source` stay hard links, devices and
    fifos are skipped, and other filesystems mounted below `source` appear as empty
    directories (a rootfs directory may have /proc or /dev mounted in it).
    """
    src_root = os.path.realpath(source)
    top = os.stat(src_root)
    if not stat.S_ISDIR(top.st_mode):
        raise RootfsError(f"'{source}' is not a directory")
    writer = posix_tar.LayerWriter(
        os.path.realpath(root), limits or Limits(), on_count or _ignore, check or _ignore,
        os.geteuid() == 0 if same_owner is None else same_owner,
    )
    writer.directory(writer.root, top.st_mode, top.st_uid, top.st_gid, top.st_mtime)
    linked: dict[tuple[int, int], str] = {}
    walk = [""]
    while walk:
        rel = walk.pop()
        with os.scandir(os.path.join(src_root, rel)) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            writer.admit()
            src = os.path.join(src_root, rel, name)
            dst = os.path.join(writer.root, rel, name)
            st = os.lstat(src)
            if _copy_entry(writer, src, dst, st, linked) and st.st_dev == top.st_dev:
                walk.append(os.path.join(rel, name))
    writer.finish()
    return writer.stats


def _copy_entry(
    writer: posix_tar.LayerWriter, src: str, dst: str, st: os.stat_result, linked: dict[tuple[int, int], str]
) -> bool:
    """Copy one entry; True when it is a directory to descend into."""
    if stat.S_ISDIR(st.st_mode):
        writer.directory(dst, st.st_mode, st.st_uid, st.st_gid, st.st_mtime)
        writer.written()
        return True
    if stat.S_ISLNK(st.st_mode):
        writer.symlink(dst, os.readlink(src), st.st_uid, st.st_gid, st.st_mtime)
    elif stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in linked:
            writer.hardlink(dst, linked[key])
        else:
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as data:
                writer.file(dst, data, st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime)
            linked[key] = dst
    else:
        writer.stats.skipped += 1
        return False
    writer.written()
    return False


def copy_host_file(host_path: str, root: str | Path, path_in_root: str) -> bool:
    """Copy a host file (following host symlinks, as cp does) to `path_in_root` inside `root`.

    The destination's parents are resolved inside the root and an existing entry at the
    destination is replaced, not followed: an image whose /etc/resolv.conf is a symlink to
    `/run/...` must not make the daemon write a host file. Returns False when `host_path` does
    not exist.
    """
    try:
        source = open(host_path, "rb")  # noqa: SIM115 - closed below, after the destination exists
    except FileNotFoundError:
        return False
    with source:
        parts = posix_tar.member_parts(path_in_root)
        if not parts:
            raise RootfsError(f"invalid destination '{path_in_root}'")
        real_root = os.path.realpath(root)
        path = posix_tar.place(real_root, parts)
        posix_tar.clear(path)
        fd = os.open(path, posix_tar.NEW_FILE, 0o644)
        try:
            with open(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(source, out, posix_tar.CHUNK)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
    return True


def _ignore(*_args: object) -> None:
    return None
