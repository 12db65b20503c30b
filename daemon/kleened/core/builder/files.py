"""COPY and ADD as instructions, and the `--chmod` modes they apply.

COPY: `COPY [--from=] [--chown=] [--chmod=] [--link] [--parents] [--exclude=]... <src>... <dest>` or the JSON form.
A source may be a heredoc (`COPY <<EOF /etc/motd`): a file named by the delimiter with the heredoc's text.
ADD: the same flags but `--from` and `--parents`, plus `--checksum=sha256:<hex>` (remote files) and `--unpack=`
(false: keep local tar archives as files). A source `http://...` or `https://...` is downloaded; a local tar
archive is extracted. Git repositories are refused at parse time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Self

from .expand import ExpansionError
from .instructions import DockerfileError, Heredoc, Instruction, error

if TYPE_CHECKING:
    from .scope import BuildScope

CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}\Z")
_OCTAL = re.compile(r"[0-7]{1,4}\Z")
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)\Z")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}  # the bits each class owns (special bit included)
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_git(source: str) -> bool:
    """A Git repository source, which ADD would clone (not supported)."""
    base = source.split("#", 1)[0]
    return source.startswith(("git@", "git://", "ssh://")) or (is_url(source) and base.endswith(".git"))


@dataclass(frozen=True, slots=True)
class Chmod:
    """A `--chmod` value: octal (`755`, applied to files and directories alike) or symbolic (`u+x`, `a=rX`)."""

    text: str

    def __post_init__(self) -> None:
        if not (_OCTAL.match(self.text) or all(_CLAUSE.match(c) for c in self.text.split(","))):
            raise ValueError(f"invalid --chmod '{self.text[:32]}' (octal like 755, or symbolic like u+x,go=rX)")

    def apply(self, mode: int, is_dir: bool) -> int:
        """The permission bits of an entry whose own bits are `mode`."""
        if _OCTAL.match(self.text):
            return int(self.text, 8)
        for clause in self.text.split(","):
            m = _CLAUSE.match(clause)
            assert m is not None
            who = m.group(1).replace("a", "ugo") or "ugo"
            mask = sum(_WHO[w] for w in set(who))
            for op, perm in _ACTION.findall(m.group(2)):
                mode = _apply_action(mode, is_dir, mask, op, perm)
        return mode & 0o7777


def _apply_action(mode: int, is_dir: bool, mask: int, op: str, perm: str) -> int:
    if perm in ("u", "g", "o"):  # copy another class's bits: g=u
        shift = {"u": 6, "g": 3, "o": 0}[perm]
        bits = (mode >> shift) & 0o7
        bits = bits * 0o111
    else:
        bits = 0
        for p in perm:
            if p == "X":
                if is_dir or mode & 0o111:
                    bits |= _PERM["x"]
            else:
                bits |= _PERM[p]
    bits &= mask
    if op == "+":
        return mode | bits
    if op == "-":
        return mode & ~bits
    return (mode & ~mask) | bits


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Instruction):
    """Sources are relative to the build context (or to stage/image `from_`) and may hold wildcards, which the
    builder expands, or be heredocs; `json` tells the JSON form, whose elements get `$` expansion but no quote
    removal. After `resolve`, heredocs carry their final text and `chmod` is checked."""

    keyword: ClassVar[str] = "COPY"
    sources: tuple[str | Heredoc, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    json: bool = False

    def resolve(self, scope: BuildScope) -> Self:
        def one(text: str, quotes: bool = True) -> str:
            return scope.expand(text, line=self.line, quotes=quotes)

        chmod = None if self.chmod is None else one(self.chmod)
        if chmod is not None:
            try:
                Chmod(chmod)
            except ValueError as exc:
                raise ExpansionError(f"{exc} in: {self.line}", "invalid chmod") from None
        return replace(
            self,
            sources=tuple(s.resolve(scope, self.line) if isinstance(s, Heredoc) else one(s, not self.json)
                          for s in self.sources),
            dest=one(self.dest, not self.json),
            from_=None if self.from_ is None else one(self.from_),
            chown=None if self.chown is None else one(self.chown),
            chmod=chmod,
            excludes=tuple(one(e) for e in self.excludes),
        )

    @property
    def mode(self) -> Chmod | None:
        return None if self.chmod is None else Chmod(self.chmod)


@dataclass(frozen=True, slots=True, kw_only=True)
class Add(Copy):
    keyword: ClassVar[str] = "ADD"
    checksum: str | None = None
    unpack: bool | None = None  # None: Docker's default (local archives are extracted, remote files never)

    def resolve(self, scope: BuildScope) -> Self:
        resolved = Copy.resolve(self, scope)
        if self.checksum is None:
            return resolved
        checksum = scope.expand(self.checksum, line=self.line)
        if not CHECKSUM.match(checksum):
            raise ExpansionError(f"invalid --checksum '{checksum[:80]}' (sha256:<64 hex digits>) in: {self.line}",
                                 "invalid checksum")
        for source in resolved.sources:
            if isinstance(source, str) and not is_url(source):
                raise ExpansionError(f"ADD --checksum applies to http(s) sources only, not '{source[:64]}'",
                                     "checksum of a local file")
        return replace(resolved, checksum=checksum)


def check_chmod(value: str, line: str) -> None:
    """Parse-time check of a literal `--chmod`."""
    if "$" in value:
        return
    try:
        Chmod(value)
    except ValueError as exc:
        raise error(line, str(exc)) from None


def check_sources(keyword: str, sources: list[str | Heredoc], line: str) -> None:
    """Parse-time checks of literal sources: ADD refuses Git repositories, COPY refuses URLs (as Docker)."""
    for source in sources:
        if isinstance(source, Heredoc) or "$" in source:
            continue
        if keyword == "ADD" and is_git(source.strip("\"'")):
            raise DockerfileError(f"error in '{line}': ADD of a Git repository is not supported "
                                  f"(clone it in a RUN, or copy a checkout from the context)")
        if keyword == "COPY" and is_url(source.strip("\"'")):
            raise error(line, "COPY cannot fetch URLs: use ADD for a remote file")
