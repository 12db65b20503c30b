"""Files for image builds: COPY sources read from a tree on the host (the build context, or the mounted root of a
stage or image for `COPY --from`) and written into a container's mounted root; unpacking an uploaded context.

Vocabulary: a *tree* is the directory COPY reads from and acts as its `/`; a *pattern* is one COPY source as written
(after variable expansion); a *source* is what a pattern names in the tree; an *entry* is one file, directory or
link below a directory source.

Rules (Docker's, where upstream's `cp -R` differs the difference is noted):
- a pattern is relative to the tree, a leading `/` included; one that climbs out (`../x`) is refused with
  "forbidden path outside the build context" instead of being clamped, so a mistake is not silently something else;
- `*`, `?` and `[...]` match within one path component (hidden files too), `\\x` is a literal x; a pattern without
  them names exactly one path; symlinks on the way are followed *inside the tree* (an absolute target restarts at
  the tree's root), so a context symlink to `/etc/passwd` reads `<context>/etc/passwd`, never the host's;
- the filter (.dockerignore) hides what it ignores: an ignored file is "not found", ignored entries below a
  directory are skipped, and the filter is applied to the resolved path, so a symlink cannot reach an ignored file;
- a directory source copies its *contents* (upstream's `cp -R dir dest` copied the directory itself when dest
  existed); symlinks inside it are copied as links, devices and fifos are skipped;
- the destination is resolved inside the container root the way the container sees it: symlinks are followed with
  the root as `/` (a link to `/etc/testdir` lands in `<root>/etc/testdir`, a link to `../../..` stays in the root),
  missing directories are created, and the last component of a file destination is never followed: whatever is
  there is replaced (files are created `O_EXCL | O_NOFOLLOW` by `posix_tar.LayerWriter`);
- everything copied is owned by the uid/gid given (root unless `COPY --chown`) and keeps its mode and mtime.

All functions are synchronous and meant for a worker thread; `check` is called between entries and aborts by
raising (the builder passes trio's `check_cancelled`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kleened.platform import posix_tar
from kleened.platform.rootpath import PathEscape, resolve_in_root

_MAGIC = re.compile(r"(?<!\\)[*?\[]")
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
CONTEXT_MEMBERS = 1_000_000  # entries an uploaded context may hold


class CopyError(ValueError):
    """A COPY cannot be done; `str()` is the reason shown in the build log."""


class PathFilter(Protocol):
    """What `.dockerignore` rules answer (`kleene_protocol.dockerignore.DockerIgnore`)."""

    def is_ignored(self, relpath: str) -> bool: ...
    def should_descend(self, reldir: str) -> bool: ...


Check = Callable[[], None]


@dataclass(frozen=True)
class Source:
    path: str  # host path, resolved inside the tree
    rel: str  # the resolved path relative to the tree ("" for the tree itself)
    name: str  # the name as the pattern matched it: what a file is called in a destination directory
    is_dir: bool


def _has_magic(part: str) -> bool:
    return bool(_MAGIC.search(part))


def _unescape(part: str) -> str:
    return re.sub(r"\\(.)", r"\1", part)


def _translate(part: str) -> re.Pattern[str]:
    """One path component's wildcard pattern as a regex (Go's filepath.Match, which Docker uses)."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "\\" and i + 1 < len(part):
            out.append(re.escape(part[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := part.find("]", i + 2)) > 0:
            body = part[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


class CopyPlan:
    """The sources of one COPY, found; `digest` fingerprints what would be copied, `apply` copies it."""

    def __init__(self, sources: list[Source], ignore: PathFilter | None) -> None:
        self.sources = sources
        self._ignore = ignore

    def __len__(self) -> int:
        return len(self.sources)

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
                if self._ignore is not None:
                    rel = posixpath.join(source.rel, below) if source.rel else below
                    if self._ignore.is_ignored(rel) and not (is_dir and self._ignore.should_descend(rel)):
                        continue
                yield below, host, st
                if is_dir:
                    pending.append(below)

    def digest(self) -> str:
        """sha256 over names, types, modes and contents (not times or owners: COPY sets the owner)."""
        h = hashlib.sha256()
        for source in self.sources:
            h.update(f"source\0{source.name}\0{source.is_dir}\0".encode(errors="surrogateescape"))
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

    def apply(self, rootfs: Path, dest: str, *, into_dir: bool, uid: int, gid: int, check: Check) -> int:
        """Copy into the mounted root `rootfs` at the absolute `dest`; return the number of entries written.

        `into_dir`: `dest` is a directory even if it does not exist yet (it ended in `/`, or there are several
        sources). Raises `CopyError`; what was written before a failure stays (the builder drops the layer).
        """
        root = os.path.realpath(rootfs)
        # Owners can only be set by root (the daemon); an unprivileged caller (a test) keeps its own.
        writer = posix_tar.LayerWriter(root, posix_tar.Limits(), _nothing, check, os.geteuid() == 0)
        try:
            for source in self.sources:
                if source.is_dir:
                    target = _directory(root, dest)
                    for below, host, st in self._entries(source):
                        writer.admit()
                        _write(writer, os.path.join(target, below), host, st, uid, gid)
                else:
                    writer.admit()
                    _write(writer, _file_target(root, dest, source.name, into_dir), source.path,
                           os.lstat(source.path), uid, gid)
            writer.finish()
        except (posix_tar.ExtractError, PathEscape, NotADirectoryError, IsADirectoryError) as exc:
            raise CopyError(str(exc)) from None
        return writer.stats.entries


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


def _write(writer: posix_tar.LayerWriter, dst: str, host: str, st: os.stat_result, uid: int, gid: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        writer.directory(dst, st.st_mode, uid, gid, st.st_mtime)
    elif stat.S_ISLNK(st.st_mode):
        writer.symlink(dst, os.readlink(host), uid, gid, st.st_mtime)
    elif stat.S_ISREG(st.st_mode):
        with open(os.open(host, _READ), "rb") as data:
            writer.file(dst, data, st.st_size, st.st_mode, uid, gid, st.st_mtime)
    else:
        writer.stats.skipped += 1
        return
    writer.written()


class HostFiles:
    """The builder's file driver on a POSIX host (the `core.builder.steps.BuildFiles` interface)."""

    def plan(self, tree: Path, patterns: Sequence[str], ignore: PathFilter | None) -> CopyPlan:
        """Find the sources `patterns` name in `tree`. Raises `CopyError`."""
        sources: list[Source] = []
        for pattern in patterns:
            sources += _expand(str(tree), pattern, ignore)
        return CopyPlan(sources, ignore)

    def unpack(self, archive: Path, dest: Path, *, max_bytes: int, check: Check) -> int:
        """Extract an uploaded context (any tar, compressed or not) into the new directory `dest`, with
        `posix_tar`'s rules for hostile archives; return the number of entries. Raises `ValueError`."""
        dest.mkdir(mode=0o700)
        limits = posix_tar.Limits(max_bytes=max_bytes, max_members=CONTEXT_MEMBERS)
        return posix_tar.extract(archive, dest, limits=limits, check=check, same_owner=False).entries


def _expand(tree: str, pattern: str, ignore: PathFilter | None) -> list[Source]:
    rel = posixpath.normpath(pattern.lstrip("/") or ".")
    if rel == ".." or rel.startswith("../"):
        raise CopyError(f"forbidden path outside the build context: {pattern}")
    magic = _has_magic(rel)
    found = []
    for candidate in _glob(tree, rel) if magic else [_unescape(rel)]:
        try:
            host = resolve_in_root(Path(tree), candidate)
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError, PathEscape):
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # a link loop resolve_in_root gave up on
        resolved = os.path.relpath(host, os.path.realpath(tree))
        resolved = "" if resolved == "." else resolved
        is_dir = stat.S_ISDIR(st.st_mode)
        hidden = ignore is not None and resolved and ignore.is_ignored(resolved)
        if hidden and not (is_dir and ignore.should_descend(resolved)):
            continue
        found.append(Source(str(host), resolved, posixpath.basename(candidate) or ".", is_dir))
    if not found:
        if magic:
            raise CopyError(f"no source files were specified: no file matches '{pattern}'")
        raise CopyError(f"file not found in build context or excluded by .dockerignore: {pattern}")
    return found


def _glob(tree: str, rel: str) -> list[str]:
    """The relative paths below `tree` that `rel` matches, component by component, in name order."""
    paths = [""]
    for part in rel.split("/"):
        if not _has_magic(part):
            literal = _unescape(part)
            paths = [posixpath.join(base, literal) if base else literal for base in paths]
            continue
        regex, matched = _translate(part), []
        for base in paths:
            try:
                names = sorted(os.listdir(resolve_in_root(Path(tree), base)))
            except (OSError, PathEscape):
                continue
            matched += [posixpath.join(base, n) if base else n for n in names if regex.fullmatch(n)]
        paths = matched
    return paths
