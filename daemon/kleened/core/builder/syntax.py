"""Dockerfile text to logical lines: parser directives, the escape character, continuations and heredocs.

Docker's (BuildKit's) rules, which upstream Kleene did not have:
- *parser directives* are `# name=value` comment lines at the very top (blanks allowed around the name and `=`,
  names case-insensitive); the first line that is not one (a blank line, another comment, an instruction) ends
  them. Known: `syntax` (recorded and ignored: kleened has one Dockerfile parser, its own), `escape` (`\\` or
  `` ` ``) and `check` (build checks: ignored). A directive given twice is an error; unknown ones are comments;
- a line whose last non-blank character is the escape character continues on the next line (the escape character
  goes, the pieces are joined as they are); comment lines and blank lines inside a continuation are skipped;
  the first line of an instruction loses its leading blanks, continuation lines keep theirs;
- in RUN, COPY and ADD (also behind ONBUILD), a shell word `<<NAME`, `<<-NAME`, `<<"NAME"`, `<<'NAME'` (optionally
  after a file-descriptor number) starts a *heredoc*: the lines after the instruction up to a line that is exactly
  `NAME` (tabs stripped first for `<<-`) are its body, taken verbatim (comments and blank lines included), one
  heredoc after another in the order they appear. A quoted name turns off variable expansion of the body.

`logical_lines` yields `RawLine`s; it raises only `DockerfileError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .expand import split_words
from .instructions import DockerfileError, Heredoc

ESCAPES = ("\\", "`")
HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVE = re.compile(r"#[ \t]*([A-Za-z]+)[ \t]*=[ \t]*(.*?)[ \t]*\Z")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)([^<]*)\Z")


@dataclass(frozen=True)
class Directives:
    escape: str = "\\"
    syntax: str = ""  # `# syntax=` as written: shown once in the build log, otherwise ignored
    check: str = ""


@dataclass(frozen=True)
class RawLine:
    """One instruction: `text` is the joined logical line, `number` its first line in the file (from 1)."""

    text: str
    number: int
    heredocs: tuple[Heredoc, ...] = field(default=())
    escape: str = "\\"  # the file's escape character: how the arguments split into words


def _is_comment(raw: str) -> bool:
    return raw.lstrip().startswith("#")


def read_directives(lines: list[str]) -> tuple[Directives, int]:
    """The parser directives at the top of `lines`, and how many lines they take."""
    found: dict[str, str] = {}
    count = 0
    for raw in lines:
        m = _DIRECTIVE.match(raw.strip())
        if m is None or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        name = m.group(1).lower()
        if name in found:
            raise DockerfileError(f"error in '{raw.strip()}': only one '{name}' parser directive can be used")
        found[name] = m.group(2)
        count += 1
    escape = found.get("escape", "\\")
    if escape not in ESCAPES:
        raise DockerfileError(f"error in '# escape={escape}': the escape character must be \\ or `")
    return Directives(escape=escape, syntax=found.get("syntax", ""), check=found.get("check", "")), count


def _continues(raw: str, escape: str) -> tuple[str, bool]:
    """(`raw` without its continuation marker, whether the instruction continues on the next line)."""
    stripped = raw.rstrip(" \t")
    if stripped.endswith(escape) and not stripped.endswith(escape * 2):  # an escaped escape is not a marker
        return stripped[: -len(escape)], True
    return raw, False


def heredoc_words(text: str) -> list[Heredoc]:
    """The heredocs a logical line opens, in order (bodies still empty)."""
    if "<<" not in text:
        return []
    found = []
    for word in split_words(text):
        m = _HEREDOC_WORD.match(word)
        if m is None or not m.group(3):
            continue
        name, quoted = _unquote(m.group(3))
        if name is None:
            continue
        found.append(Heredoc(name=name, body="", expand=not quoted, chomp=m.group(2) == "-"))
    return found


def _unquote(word: str) -> tuple[str | None, bool]:
    """A heredoc delimiter without its quotes, and whether it had any; None when `word` is not one plain word."""
    out, quoted, i = [], False, 0
    while i < len(word):
        c = word[i]
        if c in "'\"":
            end = word.find(c, i + 1)
            if end < 0:
                return None, True
            out.append(word[i + 1 : end])
            quoted, i = True, end + 1
        elif c == "\\" and i + 1 < len(word):
            out.append(word[i + 1])
            quoted, i = True, i + 2
        elif c in " \t":
            return None, quoted
        else:
            out.append(c)
            i += 1
    name = "".join(out)
    return (name or None), quoted


class _Scanner:
    """Physical lines in, `RawLine`s out."""

    def __init__(self, lines: list[str], start: int, escape: str) -> None:
        self.lines = lines
        self.pos = start
        self.escape = escape

    def next_line(self) -> tuple[str, int] | None:
        if self.pos >= len(self.lines):
            return None
        self.pos += 1
        return self.lines[self.pos - 1], self.pos

    def instructions(self) -> Iterator[RawLine]:
        while (item := self.next_line()) is not None:
            raw, number = item
            if not raw.strip() or _is_comment(raw):
                continue
            text, more = _continues(raw, self.escape)  # leading blanks stay: upstream's errors quote them
            pieces = [text]
            while more and (item := self.next_line()) is not None:
                raw = item[0]
                if not raw.strip() or _is_comment(raw):
                    continue
                text, more = _continues(raw, self.escape)
                pieces.append(text)
            line = "".join(pieces)
            if not line.strip():
                continue
            yield RawLine(line, number, self._heredocs(line, number), self.escape)

    def _heredocs(self, line: str, number: int) -> tuple[Heredoc, ...]:
        keyword = line.split(None, 1)[0].upper()
        if keyword == "ONBUILD":
            rest = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
            keyword = rest.split(None, 1)[0].upper() if rest.strip() else ""
        if keyword not in HEREDOC_KEYWORDS:
            return ()
        bodies = []
        for doc in heredoc_words(line):
            body: list[str] = []
            while True:
                item = self.next_line()
                if item is None:
                    raise DockerfileError(f"error in '{line}': unterminated heredoc <<{doc.name} (line {number})")
                candidate = item[0].lstrip("\t") if doc.chomp else item[0]
                if candidate == doc.name:
                    break
                body.append(item[0] + "\n")
            bodies.append(Heredoc(name=doc.name, body="".join(body), expand=doc.expand, chomp=doc.chomp))
        return tuple(bodies)


def logical_lines(text: str) -> tuple[Directives, list[RawLine]]:
    """Split Dockerfile `text` into its directives and instructions."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    directives, skip = read_directives(lines)
    return directives, list(_Scanner(lines, skip, directives.escape).instructions())
