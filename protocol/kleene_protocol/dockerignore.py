""".dockerignore: which paths of a build context to leave out, with Docker's rules (moby/patternmatcher).

- One pattern per line. A line *starting* with `#` is a comment (`  #x` is a pattern, as in Docker); blank lines
  are skipped; patterns are trimmed, cleaned like a path (`./a/../b/` is `b`) and relative to the context root
  (a leading `/` is dropped).
- `*` matches any run of characters except `/`, `?` one character except `/`, `[...]` a class (`[!...]` or
  `[^...]` negated; never `/`), `\\x` the character x. `**` matches any number of directories, zero included:
  `**/*.go` matches `a.go` and `x/y/a.go`; a trailing `**` matches everything below.
- A pattern matches a path or any of its parent directories: `build` ignores `build/x/y`.
- `!pattern` re-includes what it matches. The last matching pattern decides, so `*.md` then `!README.md`
  keeps README.md only.

Paths given to `is_ignored` use `/`, relative to the context root; they are cleaned the same way. Parsing never
fails: a `[` without its `]` is an ordinary character. The builder still sends the Dockerfile and .dockerignore
even when they are ignored, as Docker does; that is its decision, not this module's.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Pattern tokens. Matching simulates the pattern as an automaton, one set of positions per path character: linear
# in pattern x path. (A regex, as moby compiles, backtracks exponentially on `*a*a*a*a*b` in Python's engine.)
# Wildcards are longer than one character, so they never equal a literal (an escaped `\*` is the literal "*").
_STAR = "<*>"  # any run without `/`
_ALL = "<**>"  # a trailing `**`: anything
_DIRS = "<**/>"  # zero or more whole directories
_ONE = "<?>"  # one character, not `/`


@dataclass(frozen=True, slots=True)
class _Class:
    chars: str
    ranges: tuple[tuple[str, str], ...]
    negate: bool

    def accepts(self, ch: str) -> bool:
        member = ch in self.chars or any(low <= ch <= high for low, high in self.ranges)
        return ch != "/" and member != self.negate


_Token = str | _Class  # a one-character string is a literal; the constants above are wildcards


@dataclass(frozen=True, slots=True)
class Pattern:
    """One cleaned pattern. `exception` is true for `!pattern` lines."""

    text: str
    exception: bool
    tokens: tuple[_Token, ...]

    def matches(self, path: str) -> bool:
        """True if the pattern matches `path` (cleaned) or one of its parent directories. Each parent is a prefix
        of `path` ending before a `/`, so one pass over `path` checks them all."""
        tokens, end = self.tokens, len(self.tokens)
        states = self._closure({0})
        for ch in path:
            if ch == "/" and end in states:
                return True
            nxt = set()
            for i in states:
                tok = tokens[i] if i < end else None
                if tok in (_ALL, _DIRS) or (tok == _STAR and ch != "/"):
                    nxt.add(i)
                if isinstance(tok, _Class):
                    if tok.accepts(ch):
                        nxt.add(i + 1)
                elif tok == ch or (tok == _DIRS and ch == "/") or (tok == _ONE and ch != "/"):
                    nxt.add(i + 1)
            if not nxt:
                return False
            states = self._closure(nxt)
        return end in states

    def _closure(self, states: set[int]) -> set[int]:
        """Add the positions reachable without consuming a character (every wildcard may match nothing)."""
        out = set(states)
        for i in sorted(states):
            while i < len(self.tokens) and self.tokens[i] in (_STAR, _ALL, _DIRS):
                i += 1
                out.add(i)
        return out


@dataclass(frozen=True, slots=True)
class DockerIgnore:
    patterns: tuple[Pattern, ...] = ()

    @property
    def has_exceptions(self) -> bool:
        return any(p.exception for p in self.patterns)

    def is_ignored(self, relpath: str) -> bool:
        """True if `relpath` (relative to the context root, `/`-separated) is left out of the context."""
        path = _clean(relpath)
        if path in ("", "."):
            return False  # the context root itself is never ignored
        ignored = False
        for pattern in self.patterns:
            # Only a pattern that could change the verdict needs evaluating (as moby does).
            if pattern.exception == ignored and pattern.matches(path):
                ignored = not pattern.exception
        return ignored

    def should_descend(self, reldir: str) -> bool:
        """Whether a walker must look inside directory `reldir`: yes unless it is ignored and no `!` pattern could
        bring anything below it back (then the whole directory can be skipped unread)."""
        if not self.is_ignored(reldir):
            return True
        prefix = _clean(reldir) + "/"
        return any(p.exception and _could_match_below(p.text, prefix) for p in self.patterns)

    def filter(self, relpaths: Iterable[str]) -> Iterator[str]:
        """The paths that are not ignored, in order."""
        return (p for p in relpaths if not self.is_ignored(p))


def parse(text: str) -> DockerIgnore:
    """The rules of a .dockerignore file's text."""
    patterns = []
    for raw in text.removeprefix("\ufeff").splitlines():
        if raw.startswith("#"):
            continue
        line = raw.strip()
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        if not line:
            continue
        cleaned = _clean(line)
        patterns.append(Pattern(cleaned, exception, _tokenize(cleaned)))
    return DockerIgnore(tuple(patterns))


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    return cleaned.lstrip("/") if len(cleaned) > 1 else cleaned


def _could_match_below(pattern: str, prefix: str) -> bool:
    """Conservative: could `pattern` match some path starting with `prefix`? Compares the literal head of the
    pattern (up to its first wildcard) with the prefix."""
    head = re.split(r"[*?\[\\]", pattern, maxsplit=1)[0]
    return head.startswith(prefix) or prefix.startswith(head)


def _tokenize(pattern: str) -> tuple[_Token, ...]:
    """moby's `Pattern.compile` rules, as tokens: `**/` and a `**` in the middle are `_DIRS`, a final `**` is `_ALL`,
    `\\x` is a literal x, and a `[` without its `]` is a literal."""
    out: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 3 if pattern.startswith("/", i + 2) else 2
            out.append(_ALL if i >= n else _DIRS)
            continue
        if c == "*":
            out.append(_STAR)
        elif c == "?":
            out.append(_ONE)
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(pattern[i])
        elif c == "[" and (end := _class_end(pattern, i)) > 0:
            out.append(_make_class(pattern[i + 1 : end]))
            i = end
        else:
            out.append(c)
        i += 1
    return tuple(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the class opened at `start`, or -1. A `]` right after `[` or `[!` is a member."""
    i = start + 1
    if i < len(pattern) and pattern[i] in "!^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i
        i += 1
    return -1


def _make_class(body: str) -> _Class:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    chars, ranges, i = [], [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            i += 1
        if i + 2 < len(body) and body[i + 1] == "-" and body[i] <= body[i + 2]:
            ranges.append((body[i], body[i + 2]))
            i += 3
            continue
        chars.append(body[i])
        i += 1
    return _Class("".join(chars), tuple(ranges), negate)
