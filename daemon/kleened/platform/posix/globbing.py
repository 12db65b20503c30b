"""Finding COPY/ADD sources in a tree: wildcards, symlinks followed inside the tree, .dockerignore, `--parents`.

Vocabulary (as in `copying`): a *tree* is the directory COPY reads from and acts as its `/`; a *pattern* is one
source as written (after variable expansion); a *source* is what a pattern names in the tree.

- A pattern is relative to the tree, a leading `/` included; one that climbs out (`../x`) is refused with
  "forbidden path outside the build context" instead of being clamped, so a mistake is not silently something else.
- `*`, `?` and `[...]` match within one path component (hidden files too), `\\x` is a literal x (Go's
  filepath.Match, which Docker uses); with `--parents`, `**` also matches any number of directories.
- With `--parents` a source keeps the directories above it (`x/a.txt` lands in `<dest>/x/a.txt`), from the `/./`
  pivot on when the pattern has one (`x/./y/a.txt` lands in `<dest>/y/a.txt`).
- Symlinks on the way are followed *inside the tree* (an absolute target restarts at the tree's root).
- The filter (.dockerignore) hides what it ignores, applied to the resolved path.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from kleened.platform.base import PathFilter
from kleened.platform.posix.rootpath import PathEscape, resolve_in_root

_MAGIC = re.compile(r"(?<!\\)[*?\[]")


class CopyError(ValueError):
    """A COPY cannot be done; `str()` is the reason shown in the build log."""


@dataclass(frozen=True)
class Source:
    """One thing to copy. `path` is a host path, resolved inside the tree ("" for inline data); `rel` the resolved
    path relative to the tree; `name` what a file is called in a destination directory; `parents` the directories
    `--parents` keeps above it. `data` is the text of an inline file (a heredoc); `mode`/`mtime` override the
    file's own (downloads are 0600); `unpack` extracts a tar archive into the destination instead (ADD)."""

    path: str
    rel: str
    name: str
    is_dir: bool
    parents: str = ""
    data: bytes | None = None
    mode: int | None = None
    mtime: float | None = None
    unpack: bool = False


def has_magic(part: str) -> bool:
    return bool(_MAGIC.search(part))


def _unescape(part: str) -> str:
    return re.sub(r"\\(.)", r"\1", part)


def _translate(part: str) -> re.Pattern[str]:
    """One path component's wildcard pattern as a regex."""
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


def _pivot(pattern: str) -> tuple[str, int]:
    """`--parents`: the pattern without its `/./` pivot, and how many leading components the pivot drops."""
    body = pattern.lstrip("/")
    while body.startswith("./"):
        body = body[2:]
    head, sep, tail = body.partition("/./")
    if not sep:
        return body, 0
    return f"{head}/{tail}", len([p for p in head.split("/") if p not in ("", ".")])


def expand(tree: str, pattern: str, ignore: PathFilter | None, *, parents: bool = False) -> list[Source]:
    """The sources `pattern` names in `tree`, in name order. Raises `CopyError` when there are none."""
    body, drop = _pivot(pattern) if parents else (pattern.lstrip("/"), 0)
    rel = posixpath.normpath(body or ".")
    if rel == ".." or rel.startswith("../"):
        raise CopyError(f"forbidden path outside the build context: {pattern}")
    magic = has_magic(rel)
    found = []
    for candidate in _glob(tree, rel, recursive=parents) if magic else [_unescape(rel)]:
        source = _source(tree, candidate, ignore)
        if source is None:
            continue
        if parents:
            kept = [p for p in posixpath.dirname(candidate).split("/") if p][drop:]
            source = Source(source.path, source.rel, source.name, source.is_dir, parents="/".join(kept))
        found.append(source)
    if not found:
        if magic:
            raise CopyError(f"no source files were specified: no file matches '{pattern}'")
        raise CopyError(f"file not found in build context or excluded by .dockerignore: {pattern}")
    return found


def _source(tree: str, candidate: str, ignore: PathFilter | None) -> Source | None:
    try:
        host = resolve_in_root(Path(tree), candidate)
        st = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError, PathEscape):
        return None
    if stat.S_ISLNK(st.st_mode):
        return None  # a link loop resolve_in_root gave up on
    resolved = os.path.relpath(host, os.path.realpath(tree))
    resolved = "" if resolved == "." else resolved
    is_dir = stat.S_ISDIR(st.st_mode)
    hidden = ignore is not None and resolved and ignore.is_ignored(resolved)
    if hidden and not (is_dir and ignore.should_descend(resolved)):
        return None
    return Source(str(host), resolved, posixpath.basename(candidate) or ".", is_dir)


def _glob(tree: str, rel: str, *, recursive: bool = False) -> list[str]:
    """The relative paths below `tree` that `rel` matches, component by component, in name order."""
    paths = [""]
    for part in rel.split("/"):
        if recursive and part == "**":
            paths = sorted({d for base in paths for d in _descendant_dirs(tree, base)})
            continue
        if not has_magic(part):
            literal = _unescape(part)
            paths = [posixpath.join(base, literal) if base else literal for base in paths]
            continue
        regex, matched = _translate(part), []
        for base in paths:
            matched += [posixpath.join(base, n) if base else n for n in _names(tree, base) if regex.fullmatch(n)]
        paths = matched
    return paths


def _names(tree: str, base: str) -> list[str]:
    try:
        return sorted(os.listdir(resolve_in_root(Path(tree), base)))
    except (OSError, PathEscape):
        return []


def _descendant_dirs(tree: str, base: str) -> list[str]:
    """`base` and every directory below it (not through symlinks): what `**` matches."""
    found, pending = [], [base]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            directory = resolve_in_root(Path(tree), current)
            with os.scandir(directory) as listing:
                subdirs = [e.name for e in listing if e.is_dir(follow_symlinks=False)]
        except (OSError, PathEscape):
            continue
        pending += [posixpath.join(current, n) if current else n for n in sorted(subdirs)]
    return found
