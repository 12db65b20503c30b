"""Dockerfile parsing: text in, a `Dockerfile` of frozen, typed instructions out. No I/O, no expansion, no shell.

Rules (kleene-features.md §3.1, kleene-behaviours.md §5.2/§5.3; Docker's where upstream is silent or broken):
- a line ending in `\\` continues on the next one; the pieces are joined as they are (upstream removed each
  backslash-newline). Comment lines (`#` after optional blanks) and blank lines are skipped, also inside a
  continuation (Docker, and upstream's docs; upstream's code broke such instructions, §9.2 item 4);
- keywords are case-insensitive (Docker; upstream wanted upper case) and end at the first blank;
- `Instruction.line` is the joined logical line, shown as `Step n/N : <line>`; N is `Dockerfile.total_steps`;
- arguments stay *raw*, quotes and `$` included: `Instruction.resolve(scope)` expands them when the build reaches
  the instruction, so a bad quote or `${` fails at build time with upstream's `failed environment substition of:`
  (behaviours item 56), and `$(...)` is never run (see `expand`).

Errors at parse time are `DockerfileError`, with upstream's texts where upstream has one:
`error in '<line>': invalid instruction`, `'<line>' not permitted before a FROM instruction`,
`ENV/ARG variable name is invalid on line: <line>`; new checks read `error in '<line>': <reason>`.
Beyond upstream's 8 instructions: ENTRYPOINT, EXPOSE, LABEL, `FROM ... AS name` stages and `COPY --from/--chown`.
Not supported: ADD, VOLUME, SHELL, HEALTHCHECK, ONBUILD, STOPSIGNAL, MAINTAINER, heredocs, parser directives
(`# escape=` is just a comment), `RUN --mount`.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import ClassVar, Self

from kleened.core.builder.expand import SUBSTITUTION_FAILED, BuildScope, ExpansionError, split_words
from kleened.core.errors import InvalidArgument

INVALID_INSTRUCTION = "error in '{line}': invalid instruction"
NOT_BEFORE_FROM = "'{line}' not permitted before a FROM instruction"
INVALID_NAME = "ENV/ARG variable name is invalid on line: {line}"
NO_FROM = "Dockerfile has no FROM instruction"

# Upstream demanded two characters or more (`+`, §9.2 item 3); POSIX names may be one character.
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*\Z")
_STAGE_INDEX = re.compile(r"[0-9]{1,9}\Z")
_PORT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?(?:/(tcp|udp|sctp))?\Z", re.IGNORECASE)
_RUN_FLAG = re.compile(r"--(mount|network|security)\b")
_COPY_FLAG = re.compile(r"--([A-Za-z-]*)(?:=(\S*))?(?:\s+|\Z)")
_LITERAL = re.compile(r"[^$\\'\"`]*\Z")


class DockerfileError(InvalidArgument):
    """The Dockerfile cannot be built. `message` is the text the build log shows."""


def _error(line: str, reason: str) -> DockerfileError:
    return DockerfileError(f"error in '{line}': {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    """One logical line. `keyword` is upper case; `line` is the text shown in `Step n/N : <line>`."""

    keyword: ClassVar[str] = ""
    line: str

    def resolve(self, scope: BuildScope) -> Self:
        """This instruction with its arguments expanded against `scope`, which FROM, ARG and ENV also update.
        Call it once per instruction, in order. Raises only `ExpansionError`. RUN, CMD and ENTRYPOINT come back
        unchanged: their shell form is expanded by the container's shell at run time, their exec form never."""
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class From(Instruction):
    keyword: ClassVar[str] = "FROM"
    image: str
    name: str | None = None  # stage name, lower case

    def resolve(self, scope: BuildScope) -> Self:
        image = scope.expand_from(self.image, line=self.line)
        scope.begin_stage()
        return replace(self, image=image)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Instruction):
    """RUN, CMD or ENTRYPOINT. Shell form: `argv == ("/bin/sh", "-c", text)` and `shell` is true."""

    argv: tuple[str, ...]
    shell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Run(Command):
    keyword: ClassVar[str] = "RUN"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cmd(Command):
    keyword: ClassVar[str] = "CMD"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entrypoint(Command):
    keyword: ClassVar[str] = "ENTRYPOINT"


@dataclass(frozen=True, slots=True, kw_only=True)
class Env(Instruction):
    """`pairs` are `(name, raw value)`; after `resolve`, `(name, value)`. `invalid` is why the arguments are not
    all name=value: upstream let such lines through and failed when the build reached them (item 56), so do we."""

    keyword: ClassVar[str] = "ENV"
    pairs: tuple[tuple[str, str], ...]
    invalid: str = ""

    def resolve(self, scope: BuildScope) -> Self:
        if self.invalid:
            raise ExpansionError(SUBSTITUTION_FAILED.format(line=self.line), self.invalid)
        return replace(self, pairs=tuple(scope.set_env(self.pairs, line=self.line)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Arg(Instruction):
    """`pairs` are `(name, raw default or None)`; after `resolve`, `(name, value)`."""

    keyword: ClassVar[str] = "ARG"
    pairs: tuple[tuple[str, str | None], ...]

    def resolve(self, scope: BuildScope) -> Self:
        return replace(self, pairs=tuple((n, scope.declare_arg(n, d, line=self.line)) for n, d in self.pairs))


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Instruction):
    """Sources are relative to the build context (or to stage/image `from_`) and may hold wildcards, which the
    builder expands; `json` tells the JSON form, whose elements get `$` expansion but no quote removal."""

    keyword: ClassVar[str] = "COPY"
    sources: tuple[str, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    json: bool = False

    def resolve(self, scope: BuildScope) -> Self:
        def one(text: str, quotes: bool = True) -> str:
            return scope.expand(text, line=self.line, quotes=quotes)

        return replace(
            self,
            sources=tuple(one(s, not self.json) for s in self.sources),
            dest=one(self.dest, not self.json),
            from_=None if self.from_ is None else one(self.from_),
            chown=None if self.chown is None else one(self.chown),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class User(Instruction):
    keyword: ClassVar[str] = "USER"
    user: str  # `user[:group]` or `uid[:gid]`, trimmed (behaviours §5.3 item 5)

    def resolve(self, scope: BuildScope) -> Self:
        return replace(self, user=scope.expand(self.user, line=self.line))


@dataclass(frozen=True, slots=True, kw_only=True)
class Workdir(Instruction):
    """Expanded, unlike upstream (§9.2 item 5). A relative path joins onto the previous one: `join_workdir`."""

    keyword: ClassVar[str] = "WORKDIR"
    path: str

    def resolve(self, scope: BuildScope) -> Self:
        return replace(self, path=scope.expand(self.path, line=self.line))


@dataclass(frozen=True, slots=True, kw_only=True)
class Expose(Instruction):
    """`ports` are raw words; after `resolve`, normalised `port[-port]/proto` (`80` becomes `80/tcp`)."""

    keyword: ClassVar[str] = "EXPOSE"
    ports: tuple[str, ...]

    def resolve(self, scope: BuildScope) -> Self:
        ports = []
        for word in self.ports:
            value = scope.expand(word, line=self.line)
            port = _port(value)
            if port is None:
                raise ExpansionError(f"invalid port '{value[:64]}' in: {self.line}", "invalid port")
            ports.append(port)
        return replace(self, ports=tuple(ports))


@dataclass(frozen=True, slots=True, kw_only=True)
class Label(Instruction):
    """`pairs` are `(raw key, raw value)`; after `resolve`, both expanded."""

    keyword: ClassVar[str] = "LABEL"
    pairs: tuple[tuple[str, str], ...]

    def resolve(self, scope: BuildScope) -> Self:
        pairs = tuple((scope.expand(k, line=self.line), scope.expand(v, line=self.line)) for k, v in self.pairs)
        return replace(self, pairs=pairs)


@dataclass(frozen=True, slots=True)
class Stage:
    """A FROM and the instructions up to the next FROM. `index` counts stages from 0 (`COPY --from=0`)."""

    index: int
    name: str | None
    instructions: tuple[Instruction, ...]

    @property
    def from_(self) -> From:
        first = self.instructions[0]
        assert isinstance(first, From)
        return first


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """The parsed file: a sequence of instructions, ARGs before the first FROM included."""

    instructions: tuple[Instruction, ...]

    def __iter__(self) -> Iterator[Instruction]:
        return iter(self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)

    def __getitem__(self, index: int) -> Instruction:
        return self.instructions[index]

    @property
    def total_steps(self) -> int:
        """N of `Step n/N`: every instruction (upstream counted ARGs before FROM too)."""
        return len(self.instructions)

    def status(self, index: int) -> str:
        """`Step n/N : <line>` for the instruction at 0-based `index`."""
        return f"Step {index + 1}/{self.total_steps} : {self.instructions[index].line}"

    @property
    def meta_args(self) -> tuple[Arg, ...]:
        """The ARGs before the first FROM: the only variables FROM lines see."""
        head = []
        for instr in self.instructions:
            if isinstance(instr, From):
                break
            head.append(instr)
        return tuple(i for i in head if isinstance(i, Arg))

    @property
    def stages(self) -> tuple[Stage, ...]:
        starts = [i for i, instr in enumerate(self.instructions) if isinstance(instr, From)]
        bounds = zip(starts, [*starts[1:], len(self.instructions)], strict=True)
        return tuple(
            Stage(n, _stage_name(self.instructions[a]), self.instructions[a:b]) for n, (a, b) in enumerate(bounds)
        )

    def stage(self, ref: str) -> Stage | None:
        """The stage `ref` names (case-insensitive) or numbers, else None: then `COPY --from=ref` means an image."""
        ref = ref.lower()
        for stage in self.stages:
            if stage.name == ref or (_STAGE_INDEX.match(ref) and int(ref) == stage.index):
                return stage
        return None


def _stage_name(instr: Instruction) -> str | None:
    return instr.name if isinstance(instr, From) else None


def join_workdir(current: str, path: str) -> str:
    """WORKDIR semantics: an absolute `path` replaces, a relative one joins (`/a`, `b`, `c` gives `/a/b/c`)."""
    joined = posixpath.normpath(posixpath.join(current or "/", path))
    return "/" + joined.lstrip("/")


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile. Raises only `DockerfileError`, for the first bad line in file order, then for the
    order of instructions (as upstream checked them)."""
    dockerfile = Dockerfile(tuple(_decode(line) for line in _logical_lines(text)))
    _check_order(dockerfile)
    _check_stages(dockerfile)
    return dockerfile


def _is_skipped(raw: str) -> bool:
    stripped = raw.strip()
    return not stripped or stripped.startswith("#")


def _logical_lines(text: str) -> Iterator[str]:
    pending: list[str] | None = None
    for raw in text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n"):
        if _is_skipped(raw):
            continue
        if raw.endswith("\\"):
            pending = [*(pending or []), raw[:-1]]
            continue
        yield "".join([*(pending or []), raw])
        pending = None
    if pending is not None:  # the file ended inside a continuation
        yield "".join(pending)


def _decode(line: str) -> Instruction:
    # str.split, not a regex: a regex with lazy `.*?` before `\s*` is quadratic on long runs of blanks.
    keyword, *rest = line.split(None, 1) or [""]
    args = rest[0].strip() if rest else ""
    decoder = _DECODERS.get(keyword.upper()) if keyword.isascii() else None
    if decoder is None:
        raise DockerfileError(INVALID_INSTRUCTION.format(line=line))
    if not args:
        raise _error(line, f"{keyword.upper()} requires an argument")
    return decoder(line, args)


def _check_name(name: str, line: str) -> None:
    if not _VARIABLE.match(name):
        raise DockerfileError(INVALID_NAME.format(line=line))


def _json_list(args: str) -> list[str] | None:
    """The exec (JSON) form, or None: like Docker, anything that is not a JSON list of strings is shell form
    (so `RUN [ -f x ] && y` works)."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _port(word: str) -> str | None:
    m = _PORT.match(word)
    if not m:
        return None
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 0 < low <= high <= 65535:
        return None
    ports = m.group(1) if m.group(2) is None else f"{m.group(1)}-{m.group(2)}"
    return f"{ports}/{(m.group(3) or 'tcp').lower()}"


def _from(line: str, args: str) -> From:
    words = split_words(args)
    if words[0].startswith("--"):
        raise _error(line, f"FROM {words[0].partition('=')[0]} is not supported")
    if len(words) == 1:
        return From(line=line, image=words[0])
    if len(words) == 3 and words[1].upper() == "AS":
        name = words[2].lower()
        if not _STAGE_NAME.match(name):
            raise _error(line, f"invalid stage name '{words[2]}'")
        return From(line=line, image=words[0], name=name)
    raise _error(line, "FROM takes an image, optionally followed by AS <name>")


def _command(cls: type[Run | Cmd | Entrypoint]) -> Callable[[str, str], Command]:
    def decode(line: str, args: str) -> Command:
        argv = _json_list(args)
        if argv is not None:
            if cls is Run and not argv:
                raise _error(line, "RUN requires a command")
            return cls(line=line, argv=tuple(argv), shell=False)
        if cls is Run and (m := _RUN_FLAG.match(args)):
            raise _error(line, f"RUN --{m.group(1)} is not supported")
        return cls(line=line, argv=("/bin/sh", "-c", args), shell=True)

    return decode


def _env(line: str, args: str) -> Env:
    words = split_words(args)
    if "=" not in words[0]:  # legacy `ENV name value with spaces`
        name, *value = args.split(None, 1)
        _check_name(name, line)
        if not value:
            raise _error(line, "ENV requires a value: ENV name=value")
        return Env(line=line, pairs=((name, value[0]),))
    pairs: list[tuple[str, str]] = []
    for word in words:
        name, eq, raw = word.partition("=")
        if not eq:
            hint = " (a comment must be on a line of its own)" if word.startswith("#") else ""
            return Env(line=line, pairs=tuple(pairs), invalid=f"'{word[:64]}' is not name=value{hint}")
        _check_name(name, line)
        pairs.append((name, raw))
    return Env(line=line, pairs=tuple(pairs))


def _arg(line: str, args: str) -> Arg:
    pairs: list[tuple[str, str | None]] = []
    for word in split_words(args):
        name, eq, default = word.partition("=")
        _check_name(name, line)
        pairs.append((name, default if eq else None))
    return Arg(line=line, pairs=tuple(pairs))


def _copy(line: str, args: str) -> Copy:
    flags: dict[str, str] = {}
    while args.startswith("--"):
        m = _COPY_FLAG.match(args)
        flag = m.group(1).lower() if m else args.split()[0].lstrip("-")
        if m is None or flag not in ("from", "chown"):
            raise _error(line, f"COPY --{flag} is not supported")
        if not m.group(2):
            raise _error(line, f"COPY --{flag} requires a value")
        flags[flag], args = m.group(2), args[m.end() :]
    argv = _json_list(args)
    words = split_words(args) if argv is None else argv
    if len(words) < 2:
        hint = " (is a quote unterminated?)" if argv is None and re.search("[\"'`]", args) else ""
        raise _error(line, f"COPY requires at least two arguments: <src>... <dest>{hint}")
    return Copy(
        line=line,
        sources=tuple(words[:-1]),
        dest=words[-1],
        from_=flags.get("from"),
        chown=flags.get("chown"),
        json=argv is not None,
    )


def _expose(line: str, args: str) -> Expose:
    words = split_words(args)
    for word in words:
        if _LITERAL.match(word) and _port(word) is None:  # words with `$` or quotes are checked by `resolve`
            raise _error(line, f"invalid port '{word[:64]}'")
    return Expose(line=line, ports=tuple(words))


def _label(line: str, args: str) -> Label:
    words = split_words(args)
    if "=" not in words[0]:  # legacy `LABEL key value with spaces`
        key, *value = args.split(None, 1)
        if not value:
            raise _error(line, "LABEL requires key=value")
        return Label(line=line, pairs=((key, value[0]),))
    pairs = []
    for word in words:
        key, eq, raw = word.partition("=")
        if not eq or not key:
            raise _error(line, f"LABEL requires key=value, got '{word[:64]}'")
        pairs.append((key, raw))
    return Label(line=line, pairs=tuple(pairs))


_DECODERS = {
    "FROM": _from,
    "RUN": _command(Run),
    "CMD": _command(Cmd),
    "ENTRYPOINT": _command(Entrypoint),
    "ENV": _env,
    "ARG": _arg,
    "COPY": _copy,
    "USER": lambda line, args: User(line=line, user=args),
    "WORKDIR": lambda line, args: Workdir(line=line, path=args),
    "EXPOSE": _expose,
    "LABEL": _label,
}


def _check_order(dockerfile: Dockerfile) -> None:
    for instr in dockerfile:
        if isinstance(instr, From):
            return
        if not isinstance(instr, Arg):
            raise DockerfileError(NOT_BEFORE_FROM.format(line=instr.line))
    raise DockerfileError(NO_FROM)


def _check_stages(dockerfile: Dockerfile) -> None:
    """Stage names are unique, and `COPY --from` never names its own stage or a later one (a cycle)."""
    stages = dockerfile.stages
    names: dict[str, int] = {}
    for stage in stages:
        if stage.name is not None:
            if stage.name in names:
                raise _error(stage.from_.line, f"duplicate stage name '{stage.name}'")
            names[stage.name] = stage.index
    for stage in stages:
        for instr in stage.instructions:
            if not isinstance(instr, Copy) or instr.from_ is None:
                continue
            ref = instr.from_.lower()
            index = int(ref) if _STAGE_INDEX.match(ref) else names.get(ref)
            if index is not None and index >= stage.index:
                raise _error(instr.line, f"COPY --from={instr.from_} must refer to an earlier stage")
