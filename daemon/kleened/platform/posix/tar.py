"""Filling a fresh layer from an untrusted tar archive, safely; plain Python, any POSIX host.

Archives come from URLs and files a client names, so they are hostile until proven otherwise.
A generic "safe" extractor (tarfile's `data` filter) strips what a root filesystem needs:
absolute symlinks (`/etc/localtime -> /usr/share/zoneinfo/UTC`), setuid binaries, files owned
by other uids. The rules here are a container engine's instead:

- member names are made relative (a leading `/` is dropped); a `..` component refuses the
  whole archive;
- parent directories are resolved *inside the root*, as the container will see them: a symlink
  on the way is followed with the root acting as `/` and `..` clamped at the root (what
  filepath-securejoin does), so `a -> /etc` followed by `a/passwd` writes `<root>/etc/passwd`;
- the last component is never followed: whatever is there is replaced, and files are created
  with `O_EXCL | O_NOFOLLOW`;
- symlinks are created verbatim (their targets only mean something inside the container);
- a hard link must point at an entry already inside the root;
- device nodes and fifos are skipped (a container gets its /dev from the runtime);
- mode bits, setuid/setgid/sticky included, and numeric ownership are kept (ownership only when
  running as root); extended attributes are not restored;
- a total-size cap and a member-count cap stop archive bombs.

Nothing here writes through a path outside the root, so a failure leaves at most a partial tree
inside it, which the caller removes with the layer. Everything is synchronous: the daemon runs
it in a worker thread and passes `check` (raises to abort, e.g. on cancellation) and
`on_count` (progress, called every `PROGRESS_EVERY` entries). `LayerWriter`, `place` and
`clear` are the building blocks; `platform.posix.rootfs` copies host directories with them.
"""

from __future__ import annotations

import contextlib
import errno
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from kleened.platform.posix import rootpath

GiB = 1024**3
PROGRESS_EVERY = 100  # entries between progress reports (upstream reports every >= 100 files)
CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TIME_MAX = 2**33  # year 2242: later (or negative) archive mtimes are clamped, not errors

T = TypeVar("T")
Count = Callable[[int], None]
Check = Callable[[], None]
WHITEOUT = ".wh."  # OCI: `.wh.<name>` hides <name> of the layers below
OPAQUE = ".wh..wh..opq"  # OCI: the directory holding it hides everything below it


class Whiteouts(Protocol):
    """A storage's own form of OCI whiteouts (overlay: char device 0/0, `trusted.overlay.opaque`)."""

    def whiteout(self, path: str) -> None:
        """Record that `path` (inside the layer, its parent already created) is deleted."""
        ...

    def opaque(self, directory: str) -> None:
        """Record that `directory` (created) hides the lower layers' contents."""
        ...


class ExtractError(ValueError):
    """The archive or directory could not be copied into the layer; `str()` is for the client."""


class UnsafeArchive(ExtractError):
    """The archive tries to write outside the root, or breaks a size or count limit."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one image creation may write: 16 GiB covers any real base system."""

    max_bytes: int = 16 * GiB
    max_members: int = 1_000_000


@dataclass
class Stats:
    entries: int = 0  # entries written (files, directories, links)
    bytes: int = 0  # file content written
    skipped: int = 0  # device nodes, fifos, sockets and unknown member types


def _nothing(*_args: object) -> None:
    return None


def member_parts(name: str) -> list[str]:
    """The path components of an archive member name: relative, without `.`; `..` is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"refusing archive member '{name}': its path contains '..'")
    return parts


def resolve_in_root(root: str, path: str) -> str:
    """The host path of `path` as seen from inside `root` (see `rootpath.resolve_in_root`)."""
    return _resolve(os.path.realpath(root), path)


def _resolve(real_root: str, path: str) -> str:
    try:
        return rootpath.resolve_in_real_root(real_root, path)
    except rootpath.PathEscape as exc:
        raise UnsafeArchive(str(exc)) from None


def _make_dirs(root: str, path: str) -> None:
    """Create the missing directories of `path` (inside `root`), refusing non-directories."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(path).st_mode):  # the usual case: one call instead of one per component
            return
    current = root
    rel = os.path.relpath(path, root)
    if rel == ".":
        return
    if rel == ".." or rel.startswith(".." + os.sep):
        raise UnsafeArchive(f"refusing to create '{path}': outside the root")  # resolve_in_root prevents it
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise ExtractError(f"'/{os.path.relpath(current, root)}' is not a directory") from None


def clear(path: str) -> None:
    """Remove whatever is at `path` without following it, so a new entry can take its place."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # fd-based on Linux: never follows a symlink inside
    else:
        os.unlink(path)


def place(root: str, parts: list[str], *, real_root: bool = False) -> str:
    """The host path for an entry named by `parts`: parent resolved inside `root` and created.
    `real_root`: `root` is `os.path.realpath`'s answer already (an extraction's, per entry)."""
    joined = "/".join(parts[:-1])
    parent = _resolve(root, joined) if real_root else resolve_in_root(root, joined)
    _make_dirs(root, parent)
    return os.path.join(parent, parts[-1])


def _replacing(create: Callable[[], T], path: str) -> T:
    """`create()` a new entry at `path` (it must fail on anything there: O_EXCL, symlink); if
    something is there, `clear` it and create again. Most entries are new: one call, no lstat."""
    try:
        return create()
    except FileExistsError:
        clear(path)
        return create()


def _clamp(mtime: float) -> int:
    return int(min(max(mtime, 0), _TIME_MAX))


class LayerWriter:
    """Writes entries into `root`, applying the caps and deferring directory modes and times.

    Directory modes and times are applied last: entries written into a directory change its
    mtime, and a read-only directory mode would stop a non-root extraction from filling it.
    """

    def __init__(self, root: str, limits: Limits, on_count: Count, check: Check, same_owner: bool,
                 owner: tuple[int, int] | None = None, whiteouts: Whiteouts | None = None) -> None:
        self.root = os.path.realpath(root)  # once: entries are resolved against it without it again
        self.owner = owner  # replaces every entry's uid/gid (ADD --chown of an archive)
        self.whiteouts = whiteouts
        self.limits = limits
        self.on_count = on_count
        self.check = check
        self.same_owner = same_owner
        self.stats = Stats()
        self.seen = 0
        self._reported = 0
        self._dirs: list[tuple[str, int, int]] = []

    def admit(self) -> None:
        """Account for one more source entry; abort when asked to or past the count cap."""
        self.check()
        self.seen += 1
        if self.seen > self.limits.max_members:
            raise UnsafeArchive(f"more than {self.limits.max_members} entries: refusing to go on")

    def written(self) -> None:
        self.stats.entries += 1
        if self.stats.entries - self._reported >= PROGRESS_EVERY:
            self._reported = self.stats.entries
            self.on_count(self.stats.entries)

    def directory(self, path: str, mode: int, uid: int, gid: int, mtime: float) -> None:
        uid, gid = self.owner or (uid, gid)
        if path != self.root:
            try:
                is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
            except FileNotFoundError:
                is_dir = False
            if not is_dir:
                clear(path)
                os.mkdir(path, 0o700)
        if self.same_owner:
            os.chown(path, uid, gid, follow_symlinks=False)
        self._dirs.append((path, mode & 0o7777, _clamp(mtime)))

    def file(self, path: str, data: BinaryIO, size: int, mode: int, uid: int, gid: int, mtime: float) -> None:
        uid, gid = self.owner or (uid, gid)
        if self.stats.bytes + size > self.limits.max_bytes:
            raise UnsafeArchive(f"content larger than {self.limits.max_bytes} bytes: refusing to go on")
        fd = _replacing(lambda: os.open(path, NEW_FILE, 0o600), path)
        try:
            with open(fd, "wb", closefd=False) as out:
                while chunk := data.read(CHUNK):
                    self.stats.bytes += len(chunk)
                    if self.stats.bytes > self.limits.max_bytes:
                        raise UnsafeArchive(f"content larger than {self.limits.max_bytes} bytes: refusing to go on")
                    out.write(chunk)
            if self.same_owner:
                os.fchown(fd, uid, gid)  # before fchmod: chown clears setuid bits
            os.fchmod(fd, mode & 0o7777)
            os.utime(fd, (_clamp(mtime), _clamp(mtime)))
        finally:
            os.close(fd)

    def symlink(self, path: str, target: str, uid: int, gid: int, mtime: float) -> None:
        uid, gid = self.owner or (uid, gid)
        _replacing(lambda: os.symlink(target, path), path)
        if self.same_owner:
            os.chown(path, uid, gid, follow_symlinks=False)
        os.utime(path, (_clamp(mtime), _clamp(mtime)), follow_symlinks=False)

    def hardlink(self, path: str, target: str) -> None:
        if path == target:
            return
        clear(path)
        os.link(target, path, follow_symlinks=False)

    def finish(self) -> None:
        """Apply the deferred directory modes and times, deepest first.

        A directory recorded earlier may since have been replaced (by a symlink, say), so each
        is re-resolved inside the root and opened with O_NOFOLLOW; one that moved is left alone.
        """
        for path, mode, mtime in sorted(self._dirs, key=lambda d: d[0].count(os.sep), reverse=True):
            rel = os.path.relpath(path, self.root)
            if resolve_in_root(self.root, "" if rel == "." else rel) != path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # replaced by a later entry: nothing of ours to fix up
                raise
            try:
                os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


# --- tar archives ------------------------------------------------------------------------------


@contextlib.contextmanager
def _zstd_stream(path: str) -> Iterator[BinaryIO]:
    """Decompress with the `zstd` program (Python 3.11 has no zstd module); no shell involved."""
    exe = shutil.which("zstd")
    if exe is None:
        raise ExtractError("a zstd archive needs the zstd program on the host (Debian package 'zstd')")
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [exe, "-dcq", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
            close_fds=True,
        )
        assert proc.stdout is not None
        try:
            yield proc.stdout  # type: ignore[misc]
        finally:
            # tar stops at its end-of-archive blocks; whatever zstd still has to say is not ours.
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@contextlib.contextmanager
def open_archive(path: str | Path) -> Iterator[tarfile.TarFile]:
    """Open a tar archive for one sequential pass: gzip, bzip2, xz, zstd or uncompressed.

    The compression is detected from the data, not the file name. Stream mode ("r|") never
    seeks, so memory stays flat whatever the archive size.
    """
    path = str(path)
    with open(path, "rb") as probe:
        magic = probe.read(len(_ZSTD_MAGIC))
    if magic == _ZSTD_MAGIC:
        with _zstd_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            yield tar
    else:
        with tarfile.open(path, mode="r|*") as tar:
            yield tar


def is_archive(path: str | Path) -> bool:
    """Whether `path` is a tar archive in a format `extract` reads (told by its content, as Docker does: a
    `.tar.gz` that is not one is a plain file)."""
    try:
        with open_archive(path) as tar:
            return tar.next() is not None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, ExtractError, OSError):
        return False


def extract(
    archive: str | Path,
    root: str | Path,
    *,
    limits: Limits | None = None,
    on_count: Count | None = None,
    check: Check | None = None,
    same_owner: bool | None = None,
    owner: tuple[int, int] | None = None,
) -> Stats:
    """Extract `archive` into the directory `root` by the rules in the module docstring.

    `same_owner` defaults to "running as root"; `owner` replaces every member's uid and gid. Raises
    `UnsafeArchive` for a hostile archive,
    `ExtractError` for one that does not read, `OSError` for host trouble (disk full). What was
    written before a failure stays inside `root`.
    """
    writer = LayerWriter(
        os.path.realpath(root), limits or Limits(), on_count or _nothing, check or _nothing,
        os.geteuid() == 0 if same_owner is None else same_owner, owner,
    )
    try:
        with open_archive(archive) as tar:
            _extract_all(writer, tar)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ExtractError(f"could not extract tar archive: {exc}") from exc
    writer.finish()
    return writer.stats


def extract_stream(stream: BinaryIO, writer: LayerWriter) -> Stats:
    """Extract the uncompressed tar `stream` with `writer` (an OCI layer: whiteouts when it has them)."""
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
            _extract_all(writer, tar)
    except (tarfile.TarError, EOFError) as exc:
        raise ExtractError(f"could not extract tar archive: {exc}") from exc
    writer.finish()
    return writer.stats


def _extract_all(writer: LayerWriter, tar: tarfile.TarFile) -> None:
    while (member := tar.next()) is not None:
        writer.admit()
        _extract_member(writer, tar, member)
        if len(tar.members) >= 1000:
            tar.members.clear()  # stream mode keeps every header; we never look back


def _extract_member(writer: LayerWriter, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    parts = member_parts(member.name)
    if not parts:
        if not member.isdir():
            raise UnsafeArchive(f"refusing archive member '{member.name}': it has no name")
        writer.directory(writer.root, member.mode, member.uid, member.gid, member.mtime)
        return
    if writer.whiteouts is not None and parts[-1].startswith(WHITEOUT):
        _whiteout(writer, writer.whiteouts, parts)
        return
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        writer.stats.skipped += 1  # devices, fifos, and types tarfile does not know
        return
    target = _link_target(writer.root, member) if member.islnk() else ""  # checked before _place creates dirs
    path = place(writer.root, parts, real_root=True)
    if member.isdir():
        writer.directory(path, member.mode, member.uid, member.gid, member.mtime)
    elif member.isreg():
        data = tar.extractfile(member)
        assert data is not None
        writer.file(path, data, member.size, member.mode, member.uid, member.gid, member.mtime)
    elif member.issym():
        writer.symlink(path, member.linkname, member.uid, member.gid, member.mtime)
    else:
        writer.hardlink(path, target)
    writer.written()


def _whiteout(writer: LayerWriter, whiteouts: Whiteouts, parts: list[str]) -> None:
    """An OCI whiteout entry: never a file of its own, the storage's form instead."""
    if parts[-1].startswith(WHITEOUT + WHITEOUT) and parts[-1] != OPAQUE:
        writer.stats.skipped += 1  # aufs bookkeeping (`.wh..wh.plnk`): no meaning for other storages
        return
    if parts[-1] == OPAQUE:
        directory = _resolve(writer.root, "/".join(parts[:-1]))
        _make_dirs(writer.root, directory)
        whiteouts.opaque(directory)
    else:
        hidden = parts[-1][len(WHITEOUT):]
        if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT):
            raise UnsafeArchive(f"refusing whiteout '{'/'.join(parts)}': it names no entry")
        path = place(writer.root, [*parts[:-1], hidden], real_root=True)
        clear(path)
        whiteouts.whiteout(path)
    writer.written()


def _link_target(root: str, member: tarfile.TarInfo) -> str:
    """The entry a hard link member points at: it must already be inside the root."""
    parts = member_parts(member.linkname)
    if not parts:
        raise UnsafeArchive(f"refusing hard link '{member.name}': empty target")
    target = os.path.join(resolve_in_root(root, "/".join(parts[:-1])), parts[-1])
    try:
        mode = os.lstat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UnsafeArchive(
            f"refusing hard link '{member.name}': its target '{member.linkname}' is not in the archive"
        ) from None
    if stat.S_ISDIR(mode):
        raise UnsafeArchive(f"refusing hard link '{member.name}': its target is a directory")
    return target

