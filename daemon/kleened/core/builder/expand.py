"""Variable expansion of Dockerfile arguments, done in Python: no shell, nothing is ever executed.

Upstream kleened expanded `FROM`/`ENV`/`USER`/`COPY` arguments by running
`/usr/bin/env -i <vars> /bin/sh -c "echo -n <expr>"` on the host as root, so `ENV X=$(touch /tmp/pwned)` ran
`touch` on the host (kleene-features.md §3.4, §9.2 item 1). This module implements the part of POSIX sh word
expansion that Dockerfiles rely on, as data in, data out:

- `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, plus `${v:=w}`/`${v=w}`, `${v:?w}`/`${v?w}` (fail
  like sh did, so upstream's error stays) and `${#v}`;
- quoting: `'...'` is literal, `"..."` expands `$` and honours `\\$ \\" \\\\ \\``, an unquoted `\\x` is `x`;
- `$1`..`$9` and the special parameters `$@ $* $# $? $- $$ $!` are never set in a build, so they are empty.

Never done: command substitution (`$(...)` and backticks stay verbatim, character for character), arithmetic,
field splitting of expanded values, globbing, tilde expansion. Any other `${...}` form (`${v%pat}`, `${v/a/b}`,
`${v:1}`) is an error, as is an unterminated quote: the message is upstream's
`failed environment substition of: <line>` (typo included: klee and upstream's tests match it), with the precise
cause in `ExpansionError.reason`.

Vocabulary: *raw* text is Dockerfile syntax (quotes and `$` still in it); a *word* is raw text without unquoted
blanks; a *value* is what expanding a word gives. `BuildScope` holds the ARG/ENV variables of one build.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from kleened.core.errors import InvalidArgument

SUBSTITUTION_FAILED = "failed environment substition of: {line}"  # sic, upstream's text

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_SPECIAL = "@*#?-$!"
_BLANK = " \t\n"
_OPS = (":-", ":+", ":=", ":?", "-", "+", "=", "?")
# A hostile `${a:-${a:-${a:-...}}}` must end in an ExpansionError, never a RecursionError.
_MAX_NESTING = 32


class ExpansionError(InvalidArgument):
    """A Dockerfile argument could not be expanded. `message` is what the build log shows; `reason` says why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Size caps, in bytes of UTF-8. A value larger than `value_bytes` cannot be passed to a process anyway (Linux
    caps one environment string at 128 KiB), and `total_bytes` stops `ENV A=$B$B` chains from eating memory."""

    value_bytes: int = 1 << 20
    total_bytes: int = 8 << 20


DEFAULT_LIMITS = Limits()


def _size(value: str) -> int:
    # surrogatepass: a Dockerfile decoded with errors="surrogateescape" must not raise UnicodeEncodeError here.
    return len(value.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class _Param:
    """`$name` or `${name<op><word>}`; op "" is plain, "#len" is `${#name}`."""

    name: str
    op: str = ""
    word: tuple[str | _Param, ...] = ()


class _SyntaxError(Exception):
    def __init__(self, reason: str, word_start: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.word_start = word_start


@dataclass(frozen=True, slots=True)
class Syntax:
    """How raw text is read. `quotes=False` is for JSON-form elements, where quote characters are ordinary (Docker
    would choke on `COPY ["it's", "/"]`); `$` and the escape character still work. `heredoc` is a heredoc body:
    quotes are ordinary and the escape character only escapes `$`, itself, a backquote and a newline, as in sh.
    `escape` is the Dockerfile's escape character (`# escape=`): `\\` or a backquote, which then loses its
    command-substitution meaning."""

    quotes: bool = True
    heredoc: bool = False
    escape: str = "\\"


PLAIN = Syntax()


class _Lexer:
    """Turns raw text into parts: literal strings and `_Param`s, read by `syntax`."""

    def __init__(self, text: str, *, quotes: bool = True, syntax: Syntax = PLAIN) -> None:
        self.text = text
        self.pos = 0
        self.quotes = quotes and syntax.quotes and not syntax.heredoc
        self.syntax = syntax
        self.escape = syntax.escape
        self.depth = 0
        self.word_start = 0

    def fail(self, reason: str) -> NoReturn:
        raise _SyntaxError(reason, self.word_start)

    def word(self) -> list[str | _Param]:
        """The whole text as one word: unquoted blanks are kept as they are."""
        return self.scan(stop="", dq=not self.quotes, split=False)

    def words(self, *, lenient: bool = False) -> list[tuple[int, int, list[str | _Param]]]:
        """`(start, end, parts)` per word, split on unquoted blanks. `lenient`: an unterminated construct makes the
        rest of the text one last word (with no parts) instead of failing, for the parser's first look."""
        text, out = self.text, []
        while True:
            while self.pos < len(text) and text[self.pos] in _BLANK:
                self.pos += 1
            if self.pos >= len(text):
                return out
            self.word_start = self.pos
            try:
                parts = self.scan(stop="", dq=not self.quotes, split=True)
            except _SyntaxError:
                if not lenient:
                    raise
                out.append((self.word_start, len(text.rstrip(_BLANK)), []))
                return out
            out.append((self.word_start, self.pos, parts))

    def scan(self, *, stop: str, dq: bool, split: bool) -> list[str | _Param]:
        """Parts up to `stop` (consumed; "" means end of text). `dq`: inside double quotes."""
        text, parts, buf = self.text, [], []
        while self.pos < len(text):
            c = text[self.pos]
            if stop and c == stop:
                self.pos += 1
                return _merge(parts, buf)
            if split and c in _BLANK:
                break
            if c == self.escape:
                self._escape(buf, dq, stop)
            elif c == "'" and not dq:
                end = text.find("'", self.pos + 1)
                if end < 0:
                    self.fail("unterminated single quote")
                buf.append(text[self.pos + 1 : end])
                self.pos = end + 1
            elif c == '"' and (not dq or stop == "}"):
                self.pos += 1
                parts = _merge(parts, buf) + self._nested(stop='"', dq=True)
                buf = []
            elif c == "$":
                parts = _merge(parts, buf)
                buf = []
                parts.append(self._dollar(dq))
            elif c == "`" and self.escape == "\\":
                buf.append(self._verbatim_backquote())
            else:
                buf.append(c)
                self.pos += 1
        if stop:
            self.fail("unterminated double quote" if stop == '"' else "missing '}'")
        return _merge(parts, buf)

    def _nested(self, *, stop: str, dq: bool) -> list[str | _Param]:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            self.fail(f"expansions nested deeper than {_MAX_NESTING} levels")
        parts = self.scan(stop=stop, dq=dq, split=False)
        self.depth -= 1
        return parts

    def _escape(self, buf: list[str], dq: bool, stop: str) -> None:
        nxt = self.text[self.pos + 1 : self.pos + 2]
        if not nxt:  # a trailing backslash stays, as in sh
            buf.append(self.escape)
        elif nxt == "\n":  # backslash-newline is a line continuation: both go
            pass
        elif dq and nxt not in self._escapable() and not (stop == "}" and nxt == "}"):
            buf.append(self.escape + nxt)  # inside double quotes other escapes are literal
        else:
            buf.append(nxt)
        self.pos += 1 + len(nxt)

    def _escapable(self) -> str:
        """What the escape character escapes inside double quotes (and in a heredoc body)."""
        return "$`\n" + self.escape + ("" if self.syntax.heredoc else '"')

    def _dollar(self, dq: bool) -> str | _Param:
        text, pos = self.text, self.pos
        nxt = text[pos + 1 : pos + 2]
        if nxt == "{":
            return self._brace(dq)
        if nxt == "(":
            return self._verbatim_paren()
        if m := _NAME.match(text, pos + 1):
            self.pos = m.end()
            return _Param(m.group())
        if nxt and (nxt in "0123456789" or nxt in _SPECIAL):
            self.pos += 2
            return _Param(nxt)  # never set in a build: expands to ""
        self.pos += 1
        return "$"

    def _param_name(self) -> str:
        text, pos = self.text, self.pos
        m = _NAME.match(text, pos) or _DIGITS.match(text, pos)
        if m:
            self.pos = m.end()
            return m.group()
        if pos < len(text) and text[pos] in _SPECIAL:
            self.pos += 1
            return text[pos]
        return ""

    def _brace(self, dq: bool) -> _Param:
        text, start = self.text, self.pos
        self.pos += 2
        if text.startswith("#", self.pos) and not text.startswith("}", self.pos + 1):
            self.pos += 1
            name = self._param_name()
            if name and text.startswith("}", self.pos):
                self.pos += 1
                return _Param(name, "#len")
            self.pos = start + 2
        name = self._param_name()
        if name and text.startswith("}", self.pos):
            self.pos += 1
            return _Param(name)
        if self.pos >= len(text):
            self.fail("missing '}'")
        op = next((op for op in _OPS if text.startswith(op, self.pos)), "") if name else ""
        if not op:
            self.fail(f"bad or unsupported substitution: {text[start : self.pos + 1]}")
        self.pos += len(op)
        return _Param(name, op, tuple(self._nested(stop="}", dq=dq)))

    def _verbatim_paren(self) -> str:
        """`$(...)` or `$((...))`, returned as the literal text it is: found by balancing parentheses outside
        quotes, never run."""
        text, start, depth = self.text, self.pos, 0
        i = start + 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 1
            elif c in "'\"`":
                i = self._skip_quoted(i, c)
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    self.pos = i + 1
                    return text[start : self.pos]
            i += 1
        self.fail("unterminated $( (command substitution is never run, but must be well formed)")

    def _verbatim_backquote(self) -> str:
        end = self._skip_quoted(self.pos, "`")
        start, self.pos = self.pos, end + 1
        return self.text[start : self.pos]

    def _skip_quoted(self, i: int, quote: str) -> int:
        """Index of the quote closing the one at `i`; backslashes escape except inside single quotes."""
        text = self.text
        i += 1
        while i < len(text):
            if text[i] == "\\" and quote != "'":
                i += 2
                continue
            if text[i] == quote:
                return i
            i += 1
        self.fail({"'": "unterminated single quote", '"': "unterminated double quote"}.get(quote, "unterminated `"))


def _merge(parts: list[str | _Param], buf: list[str]) -> list[str | _Param]:
    if buf:
        parts.append("".join(buf))
    return parts


class _Evaluator:
    def __init__(self, env: Mapping[str, str], limit: int) -> None:
        self.env = env
        self.assigned: dict[str, str] = {}  # `${v:=w}` holds for the rest of the expression, as in upstream's `echo`
        self.limit = limit

    def value(self, parts: Iterable[str | _Param]) -> str:
        out, size = [], 0
        for part in parts:
            piece = part if isinstance(part, str) else self.param(part)
            size += len(piece)
            if size > self.limit:  # checked as it grows: `$B$B$B...` must not allocate gigabytes first
                raise _TooLarge
            out.append(piece)
        return "".join(out)

    def param(self, p: _Param) -> str:
        val = self.assigned[p.name] if p.name in self.assigned else self.env.get(p.name)
        if p.op == "":
            return val or ""
        if p.op == "#len":
            return str(len(val or ""))
        missing = not val if p.op.startswith(":") else val is None
        kind = p.op[-1]
        if kind == "+":
            return "" if missing else self.value(p.word)
        if not missing:
            return val or ""
        if kind == "?":
            raise _Unset(self.value(p.word) or f"{p.name}: parameter null or not set")
        word = self.value(p.word)
        if kind == "=":
            self.assigned[p.name] = word
        return word


class _TooLarge(Exception):
    pass


class _Unset(Exception):
    pass


def _evaluate(parts: list[str | _Param], env: Mapping[str, str], line: str, limits: Limits) -> str:
    try:
        value = _Evaluator(env, limits.value_bytes).value(parts)
    except _Unset as exc:
        raise ExpansionError(SUBSTITUTION_FAILED.format(line=line), str(exc)) from None
    except _TooLarge:
        value = None
    if value is None or (len(value) * 4 > limits.value_bytes and _size(value) > limits.value_bytes):
        raise ExpansionError(f"expanded value is larger than {limits.value_bytes} bytes in: {line}", "too large")
    return value


def expand_word(
    text: str,
    env: Mapping[str, str],
    *,
    quotes: bool = True,
    line: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    syntax: Syntax = PLAIN,
) -> str:
    """The value of `text` as one word (blanks kept), with variables from `env`. `line` is the Dockerfile line
    named in errors (defaults to `text`). Raises only `ExpansionError`."""
    shown = text if line is None else line
    try:
        parts = _Lexer(text, quotes=quotes, syntax=syntax).word()
    except _SyntaxError as exc:
        raise ExpansionError(SUBSTITUTION_FAILED.format(line=shown), exc.reason) from None
    return _evaluate(parts, env, shown, limits)


def expand_words(
    text: str, env: Mapping[str, str], *, line: str | None = None, limits: Limits = DEFAULT_LIMITS,
    syntax: Syntax = PLAIN,
) -> list[str]:
    """The values of the words of `text` (split on unquoted blanks *before* expansion, as Docker does: a value
    with spaces stays one word)."""
    shown = text if line is None else line
    try:
        words = _Lexer(text, syntax=syntax).words()
    except _SyntaxError as exc:
        raise ExpansionError(SUBSTITUTION_FAILED.format(line=shown), exc.reason) from None
    return [_evaluate(parts, env, shown, limits) for _, _, parts in words]


def word_spans(text: str, syntax: Syntax = PLAIN) -> list[tuple[int, int]]:
    """`(start, end)` of each raw word of `text`. Never fails: an unterminated quote makes the rest of the text one
    word, so the parser can take an instruction apart and leave the error to expansion time, when upstream
    reported it (behaviours §5.2 item 56)."""
    return [(start, end) for start, end, _ in _Lexer(text, syntax=syntax).words(lenient=True)]


def split_words(text: str, syntax: Syntax = PLAIN) -> list[str]:
    """The raw words of `text`, unexpanded, quotes kept (see `word_spans`)."""
    return [text[start:end] for start, end in word_spans(text, syntax)]


def quote(value: str) -> str:
    """A word that expands to exactly `value` (single quotes; `'` becomes `'\\''`)."""
    return "'" + value.replace("'", "'\\''") + "'"
