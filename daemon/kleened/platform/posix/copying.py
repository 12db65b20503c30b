"""Files for image builds: COPY and ADD sources read from a tree on the host (the build context, or the mounted root
of a stage or image for `COPY --from`) and written into a container's mounted root; unpacking an uploaded context.

Vocabulary and the rules for finding sources: `globbing`. An *entry* is one file, directory or link below a
directory source.

Rules (Docker's, where upstream's `cp -R` differs the difference is noted):
- a directory source copies its *contents* (upstream's `cp -R dir dest` copied the directory itself when dest
  existed); symlinks inside it are copied as links, devices and fifos are skipped;
- `--exclude` patterns (.dockerignore syntax) leave out entries, matched against their path below the source (a
  file source: its name), as BuildKit does;
- the destination is resolved inside the container root the way the container sees it: symlinks are followed with
  the root as `/` (a link to `/etc/testdir` lands in `<root>/etc/testdir`, a link to `../../..` stays in the root),
  missing directories are created, and the last component of a file destination is never followed: whatever is
  there is replaced (files are created `O_EXCL | O_NOFOLLOW` by `posix_tar.LayerWriter`);
- everything copied is owned by the uid/gid given (root unless `COPY --chown`), keeps its mode (or gets `--chmod`'s)
  and mtime; inline files (heredocs) are 0644, downloads 0600 (Docker's modes);
- ADD extracts a local tar archive (gzip, bzip2, xz, zstd or plain, told by content) into the destination directory
  with `posix_tar`'s rules for hostile archives, keeping the archive's owners unless `--chown` is given.

All functions are synchronous and meant for a worker thread; `check` is called between entries and aborts by
raising (the builder passes trio's `check_cancelled`).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kleened.platform.posix import tar as posix_tar
from kleened.platform.posix.globbing import CopyError, PathFilter, Source, expand
from kleened.platform.posix.rootpath import PathEscape

__all__ = ["CONTEXT_MEMBERS", "CopyError", "CopyPlan", "HostFiles", "PathFilter", "Source"]

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
CONTEXT_MEMBERS = 1_000_000  # entries an uploaded context may hold
INLINE_MODE = 0o644

Check = Callable[[], None]
Chmod = Callable[[int, bool], int]  # (mode bits, is a directory) -> new mode bits


class CopyPlan:
    """The sources of one COPY, found; `digest` fingerprints what would be copied, `apply` copies it."""

    def __init__(self, sources: list[Source], ignore: PathFilter | None, excludes: PathFilter | None = None) -> None:
        self._excludes = excludes
        self.sources = [s for s in sources if excludes is None or s.name == "." or not excludes.is_ignored(s.name)]
        self._ignore = ignore
        if sources and not self.sources:
            raise CopyError("every source is excluded by --exclude")

    def __len__(self) -> int:
        return len(self.sources)

    def add_inline(self, name: str, data: bytes) -> None:
        """A file with `data` as its content (a heredoc source)."""
        self.sources.append(Source("", "", name, False, data=data))

    def add_file(self, name: str, path: Path, *, mode: int, mtime: float | None) -> None:
        """A host file (a download) copied as `name` with `mode`."""
        self.sources.append(Source(str(path), "", name, False, mode=mode, mtime=mtime))

    def unpack_archives(self) -> None:
        """ADD: file sources that are tar archives are extracted instead of copied."""
        self.sources = [Source(s.path, s.rel, s.name, False, unpack=True)
                        if not s.is_dir and s.data is None and s.mode is None and posix_tar.is_archive(s.path)
                        else s for s in self.sources]

    def _entries(self, source: Source) -> Iterator[tuple[str, str, os.stat_result]]:
        """`(path below the source, host path, lstat)` of every entry, parents before children, in name order."""
        pending = [""]
        while pending:
            sub = pending.pop()
            directory = os.path.join(source.path, sub)
            with os.scandir(directory) as listing:
                names = sorted(entry.name for entry in listing)
            for name in names:
                below, host = posixpath.join(sub, name) if sub else name, os.path.join(directory, name)
                st = os.lstat(host)
                is_dir = stat.S_ISDIR(st.st_mode)
                rel = posixpath.join(source.rel, below) if source.rel else below
                if _hidden(self._ignore, rel, is_dir) or _hidden(self._excludes, below, is_dir):
                    continue
                yield below, host, st
                if is_dir:
                    pending.append(below)

    def digest(self) -> str:
        """sha256 over names, types, modes and contents (not times or owners: COPY sets the owner)."""
        h = hashlib.sha256()
        for source in self.sources:
            h.update(f"source\0{source.name}\0{source.is_dir}\0{source.parents}\0{source.mode}\0".encode(
                errors="surrogateescape"))
            if source.data is not None:
                h.update(source.data)
                continue
            entries = self._entries(source) if source.is_dir else iter([("", source.path, os.lstat(source.path))])
            for below, host, st in entries:
                h.update(f"{below}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0{st.st_size}\0".encode(
                    errors="surrogateescape"))
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(host).encode(errors="surrogateescape"))
                elif stat.S_ISREG(st.st_mode):
                    with open(os.open(host, _READ), "rb") as data:
                        while chunk := data.read(posix_tar.CHUNK):
                            h.update(chunk)
        return h.hexdigest()

    def apply(self, rootfs: Path, dest: str, *, into_dir: bool, uid: int, gid: int, check: Check,
              chmod: Chmod | None = None, chown: bool = False) -> int:
        """Copy into the mounted root `rootfs` at the absolute `dest`; return the number of entries written.

        `into_dir`: `dest` is a directory even if it does not exist yet (it ended in `/`, or there are several
        sources). `chmod` gives each copied file and directory its mode; `chown` (an explicit `--chown`) also
        applies `uid:gid` to extracted archives. Raises `CopyError`; what was written before a failure stays (the
        builder drops the layer).
        """
        root = os.path.realpath(rootfs)
        # Owners can only be set by root (the daemon); an unprivileged caller (a test) keeps its own.
        writer = posix_tar.LayerWriter(root, posix_tar.Limits(), _nothing, check, os.geteuid() == 0)
        try:
            for source in self.sources:
                self._apply_one(writer, source, dest, into_dir, (uid, gid), chmod, chown)
            writer.finish()
        except (posix_tar.ExtractError, PathEscape, NotADirectoryError, IsADirectoryError) as exc:
            raise CopyError(str(exc)) from None
        return writer.stats.entries

    def _apply_one(self, writer: posix_tar.LayerWriter, source: Source, dest: str, into_dir: bool,
                   owner: tuple[int, int], chmod: Chmod | None, chown: bool) -> None:
        root = writer.root
        if source.unpack:
            target = _directory(root, dest)
            stats = posix_tar.extract(source.path, target, check=writer.check, same_owner=writer.same_owner,
                                      owner=owner if chown else None)
            writer.stats.entries += stats.entries
            return
        if source.is_dir:
            target = _directory(root, posixpath.join(dest, source.parents, source.name if source.parents else ""))
            for below, host, st in self._entries(source):
                writer.admit()
                _write(writer, os.path.join(target, below), host, st, owner, chmod)
            return
        writer.admit()
        if source.parents:
            path = os.path.join(_directory(root, posixpath.join(dest, source.parents)), source.name)
        else:
            path = _file_target(root, dest, source.name, into_dir)
        if source.data is not None:
            mode = chmod(INLINE_MODE, False) if chmod else INLINE_MODE
            writer.file(path, io.BytesIO(source.data), len(source.data), mode, *owner, time.time())
            writer.written()
            return
        st = os.lstat(source.path)
        mode = source.mode if source.mode is not None else stat.S_IMODE(st.st_mode)
        _write(writer, path, source.path, st, owner, chmod, mode=mode, mtime=source.mtime)


def _hidden(rules: PathFilter | None, rel: str, is_dir: bool) -> bool:
    return rules is not None and rules.is_ignored(rel) and not (is_dir and rules.should_descend(rel))


def _nothing(*_args: object) -> None:
    return None


def _directory(root: str, dest: str) -> str:
    """The host path of directory `dest`, symlinks followed inside `root`, created when missing."""
    return os.path.normpath(posix_tar.place(root, [*posix_tar.member_parts(dest), "."]))


def _file_target(root: str, dest: str, name: str, into_dir: bool) -> str:
    if into_dir:
        return os.path.join(_directory(root, dest), name)
    parts = posix_tar.member_parts(dest)
    if not parts:
        return os.path.join(root, name)
    full = posix_tar.resolve_in_root(root, dest)
    if os.path.isdir(full) and not os.path.islink(full):
        return os.path.join(full, name)  # an existing directory (or a link to one): copy into it, as Docker
    return posix_tar.place(root, parts)  # parents resolved and created; the last component is replaced


def _write(writer: posix_tar.LayerWriter, dst: str, host: str, st: os.stat_result, owner: tuple[int, int],
           chmod: Chmod | None, *, mode: int | None = None, mtime: float | None = None) -> None:
    bits = stat.S_IMODE(st.st_mode) if mode is None else mode
    is_dir = stat.S_ISDIR(st.st_mode)
    if chmod is not None and not stat.S_ISLNK(st.st_mode):
        bits = chmod(bits, is_dir)
    when = st.st_mtime if mtime is None else mtime
    if is_dir:
        writer.directory(dst, bits, *owner, when)
    elif stat.S_ISLNK(st.st_mode):
        writer.symlink(dst, os.readlink(host), *owner, when)
    elif stat.S_ISREG(st.st_mode):
        with open(os.open(host, _READ), "rb") as data:
            writer.file(dst, data, st.st_size, bits, *owner, when)
    else:
        writer.stats.skipped += 1
        return
    writer.written()


class HostFiles:
    """The builder's file driver on a POSIX host (the `core.builder.steps.BuildFiles` interface)."""

    def plan(self, tree: Path, patterns: Sequence[str], ignore: PathFilter | None, *,
             excludes: PathFilter | None = None, parents: bool = False) -> CopyPlan:
        """Find the sources `patterns` name in `tree`. Raises `CopyError`."""
        sources: list[Source] = []
        for pattern in patterns:
            sources += expand(str(tree), pattern, ignore, parents=parents)
        return CopyPlan(sources, ignore, excludes)

    def unpack(self, archive: Path, dest: Path, *, max_bytes: int, check: Check) -> int:
        """Extract an uploaded context (any tar, compressed or not) into the new directory `dest`, with
        `posix_tar`'s rules for hostile archives; return the number of entries. Raises `ValueError`."""
        dest.mkdir(mode=0o700)
        limits = posix_tar.Limits(max_bytes=max_bytes, max_members=CONTEXT_MEMBERS)
        return posix_tar.extract(archive, dest, limits=limits, check=check, same_owner=False).entries
