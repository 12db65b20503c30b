"""One logical line to one `Instruction`: the keyword, its `--flags`, its arguments (still raw), its heredocs.

Flags come first, each one word: `--name=value` (quotes allowed in the value) or `--name` for a boolean. What an
instruction does not know is refused with the line and the reason; so is what kleened cannot do (`RUN --device`,
`RUN --security=insecure`, `ADD --keep-git-dir`, `ADD --unpack=true` of a URL is refused when it resolves).
Errors keep upstream's texts where upstream has one (`error in '<line>': invalid instruction`,
`ENV/ARG variable name is invalid on line: <line>`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from kleene_protocol.durations import parse_duration

from .expand import Syntax, split_words, word_spans
from .files import Add, Copy, check_chmod, check_sources, is_url
from .instructions import (
    Arg,
    Cmd,
    Command,
    DockerfileError,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    error,
    normal_port,
    signal_number,
)
from .mountspec import parse_mount
from .syntax import RawLine, heredoc_words

INVALID_INSTRUCTION = "error in '{line}': invalid instruction"
INVALID_NAME = "ENV/ARG variable name is invalid on line: {line}"

# Upstream demanded two characters or more (`+`, §9.2 item 3); POSIX names may be one character.
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*\Z")
_LITERAL = re.compile(r"[^$\\'\"`]*\Z")
_HEREDOC_SOURCE = re.compile(r"[0-9]*<<-?[^<]+\Z")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_NOT_SUPPORTED = {
    ("RUN", "device"): "RUN --device is not supported: kleened has no device (CDI) support",
    ("ADD", "keep-git-dir"): "ADD --keep-git-dir is not supported: kleened does not clone Git repositories",
}
Flags = dict[str, list[str | None]]


def _check_name(name: str, line: str) -> None:
    if not _VARIABLE.match(name):
        raise DockerfileError(INVALID_NAME.format(line=line))


def json_list(args: str) -> list[str] | None:
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


def _words(raw: RawLine, text: str) -> list[str]:
    """The raw words of `text`, split by the file's escape character."""
    return split_words(text, Syntax(escape=raw.escape))


def split_flags(raw: RawLine, keyword: str, args: str, allowed: frozenset[str]) -> tuple[Flags, str]:
    """The leading `--flags` of `args` and the rest. Unknown flags are refused."""
    line = raw.text
    flags: Flags = {}
    rest = ""  # stays empty when every word is a flag
    for start, end in word_spans(args, Syntax(escape=raw.escape)):
        word = args[start:end]
        if not word.startswith("--"):
            rest = args[start:]
            break
        name, eq, value = word[2:].partition("=")
        name = name.lower()
        if (keyword, name) in _NOT_SUPPORTED:
            raise error(line, _NOT_SUPPORTED[(keyword, name)])
        if name not in allowed:
            raise error(line, f"{keyword} --{name[:32]} is not a known flag")
        flags.setdefault(name, []).append(value if eq else None)
    return flags, rest


def _one(keyword: str, flags: Flags, name: str, line: str) -> str | None:
    values = flags.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise error(line, f"{keyword} --{name} may be given only once")
    if not values[0]:
        raise error(line, f"{keyword} --{name} requires a value")
    return values[0]


def _flag_bool(keyword: str, flags: Flags, name: str, line: str) -> bool | None:
    values = flags.get(name)
    if not values:
        return None
    value = values[-1]
    if value is None:
        return True
    parsed = _BOOLS.get(value.lower())
    if parsed is None:
        raise error(line, f"{keyword} --{name}: expected true or false, got '{value[:32]}'")
    return parsed


def _from(raw: RawLine, args: str) -> From:
    line = raw.text
    flags, rest = split_flags(raw, "FROM", args, frozenset({"platform"}))
    words = _words(raw, rest)
    platform = _one("FROM", flags, "platform", line)
    if len(words) == 1:
        return From(line=line, image=words[0], platform=platform)
    if len(words) == 3 and words[1].upper() == "AS":
        name = words[2].lower()
        if not _STAGE_NAME.match(name):
            raise error(line, f"invalid stage name '{words[2]}'")
        return From(line=line, image=words[0], name=name, platform=platform)
    raise error(line, "FROM takes an image, optionally followed by AS <name>")


def _command(cls: type[Cmd | Entrypoint]) -> Callable[[RawLine, str], Command]:
    def decode(raw: RawLine, args: str) -> Command:
        argv = json_list(args)
        if argv is not None:
            return cls(line=raw.text, argv=tuple(argv), shell=False)
        return cls(line=raw.text, argv=("/bin/sh", "-c", args), shell=True)

    return decode


def _run(raw: RawLine, args: str) -> Run:
    line = raw.text
    flags, rest = split_flags(raw, "RUN", args, frozenset({"mount", "network", "security", "device"}))
    if not rest:
        raise error(line, "RUN requires a command")
    network = (_one("RUN", flags, "network", line) or "default").lower()
    if network not in ("default", "none", "host"):
        raise error(line, f"RUN --network={network[:32]} is not supported (use default, none or host)")
    security = (_one("RUN", flags, "security", line) or "sandbox").lower()
    if security != "sandbox":
        raise error(line, f"RUN --security={security[:32]} is not supported: build steps always run sandboxed")
    mounts = tuple(parse_mount(value or "", line) for value in flags.get("mount", []))
    argv = json_list(rest)
    if argv is not None:
        if not argv:
            raise error(line, "RUN requires a command")
        return Run(line=line, argv=tuple(argv), shell=False, mounts=mounts, network=network)
    text, script = _with_heredocs(rest, raw.heredocs)
    return Run(line=line, argv=("/bin/sh", "-c", text), shell=True, mounts=mounts, network=network, script=script)


def _with_heredocs(command: str, heredocs: tuple[Heredoc, ...]) -> tuple[str, Heredoc | None]:
    """BuildKit's rules: a command that is one heredoc runs its text with the shell (or as an executable file when
    it starts with `#!`); otherwise the shell gets the command with the heredocs appended, and handles them."""
    if not heredocs:
        return command, None
    only = heredoc_words(command.strip())
    if len(heredocs) == 1 and len(split_words(command)) == 1 and only and only[0].name == heredocs[0].name:
        doc = heredocs[0]
        if doc.content.startswith("#!"):
            return f"/dev/pipes/{doc.name}", doc
        return doc.content, None
    return command + "".join(f"\n{doc.body}{doc.name}" for doc in heredocs), None


def _env(raw: RawLine, args: str) -> Env:
    line = raw.text
    words = _words(raw, args)
    if "=" not in words[0]:  # legacy `ENV name value with spaces`
        name, *value = args.split(None, 1)
        _check_name(name, line)
        if not value:
            raise error(line, "ENV requires a value: ENV name=value")
        return Env(line=line, pairs=((name, value[0]),))
    pairs: list[tuple[str, str]] = []
    for word in words:
        name, eq, value = word.partition("=")
        if not eq:
            hint = " (a comment must be on a line of its own)" if word.startswith("#") else ""
            return Env(line=line, pairs=tuple(pairs), invalid=f"'{word[:64]}' is not name=value{hint}")
        _check_name(name, line)
        pairs.append((name, value))
    return Env(line=line, pairs=tuple(pairs))


def _arg(raw: RawLine, args: str) -> Arg:
    pairs: list[tuple[str, str | None]] = []
    for word in _words(raw, args):
        name, eq, default = word.partition("=")
        _check_name(name, raw.text)
        pairs.append((name, default if eq else None))
    return Arg(line=raw.text, pairs=tuple(pairs))


def _copy(cls: type[Copy]) -> Callable[[RawLine, str], Copy]:
    keyword = cls.keyword
    allowed = {"chown", "chmod", "link", "exclude"} | ({"from", "parents"} if cls is Copy else {"checksum",
                                                                                             "unpack", "keep-git-dir"})

    def decode(raw: RawLine, args: str) -> Copy:
        line = raw.text
        flags, rest = split_flags(raw, keyword, args, frozenset(allowed))
        argv = json_list(rest)
        words: list[str | Heredoc] = list(_words(raw, rest) if argv is None else argv)
        if argv is None and raw.heredocs:
            words = _heredoc_sources(words, raw.heredocs)
        if len(words) < 2:
            hint = " (is a quote unterminated?)" if argv is None and re.search("[\"'`]", rest) else ""
            raise error(line, f"{keyword} requires at least two arguments: <src>... <dest>{hint}")
        if isinstance(words[-1], Heredoc):
            raise error(line, f"{keyword}: the destination cannot be a heredoc")
        check_sources(keyword, words[:-1], line)
        chmod = _one(keyword, flags, "chmod", line)
        if chmod is not None:
            check_chmod(chmod, line)
        common = {
            "line": line, "sources": tuple(words[:-1]), "dest": words[-1], "chown": _one(keyword, flags, "chown", line),
            "chmod": chmod, "link": bool(_flag_bool(keyword, flags, "link", line)), "json": argv is not None,
            "excludes": tuple(v for v in flags.get("exclude", []) if v) + _need_values(keyword, flags, "exclude", line),
        }
        if cls is Copy:
            return Copy(**common, from_=_one(keyword, flags, "from", line),
                        parents=bool(_flag_bool(keyword, flags, "parents", line)))
        unpack = _flag_bool(keyword, flags, "unpack", line)
        if unpack and any(isinstance(s, str) and is_url(s) for s in words[:-1]):
            raise error(line, "ADD --unpack=true of a URL is not supported: kleened never extracts a remote archive")
        return Add(**common, checksum=_one(keyword, flags, "checksum", line), unpack=unpack)

    return decode


def _need_values(keyword: str, flags: Flags, name: str, line: str) -> tuple[str, ...]:
    if any(v is None or v == "" for v in flags.get(name, [])):
        raise error(line, f"{keyword} --{name} requires a value")
    return ()


def _heredoc_sources(words: list[str | Heredoc], heredocs: tuple[Heredoc, ...]) -> list[str | Heredoc]:
    pending = list(heredocs)
    out: list[str | Heredoc] = []
    for word in words:
        if isinstance(word, str) and pending and _HEREDOC_SOURCE.match(word):
            out.append(pending.pop(0))
        else:
            out.append(word)
    return out


def _expose(raw: RawLine, args: str) -> Expose:
    words = _words(raw, args)
    for word in words:
        if _LITERAL.match(word) and normal_port(word) is None:  # words with `$` or quotes are checked by `resolve`
            raise error(raw.text, f"invalid port '{word[:64]}'")
    return Expose(line=raw.text, ports=tuple(words))


def _label(raw: RawLine, args: str) -> Label:
    line = raw.text
    words = _words(raw, args)
    if "=" not in words[0]:  # legacy `LABEL key value with spaces`
        key, *value = args.split(None, 1)
        if not value:
            raise error(line, "LABEL requires key=value")
        return Label(line=line, pairs=((key, value[0]),))
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise error(line, f"LABEL requires key=value, got '{word[:64]}'")
        pairs.append((key, value))
    return Label(line=line, pairs=tuple(pairs))


def _volume(raw: RawLine, args: str) -> Volume:
    argv = json_list(args)
    paths = _words(raw, args) if argv is None else argv
    if not paths or any(p == "" for p in paths):
        raise error(raw.text, "VOLUME specified can not be an empty string")
    return Volume(line=raw.text, paths=tuple(paths), json=argv is not None)


def _stopsignal(raw: RawLine, args: str) -> StopSignal:
    words = _words(raw, args)
    if len(words) != 1:
        raise error(raw.text, "STOPSIGNAL takes one signal")
    if _LITERAL.match(words[0]) and signal_number(words[0]) is None:
        raise error(raw.text, f"invalid signal '{words[0][:32]}'")
    return StopSignal(line=raw.text, signal=words[0])


def _shell(raw: RawLine, args: str) -> Shell:
    argv = json_list(args)
    if not argv:
        raise error(raw.text, 'SHELL requires the arguments to be in JSON form: SHELL ["executable", "parameters"]')
    return Shell(line=raw.text, argv=tuple(argv))


def _onbuild(raw: RawLine, args: str) -> Onbuild:
    keyword = args.split(None, 1)[0].upper()
    if keyword in ("ONBUILD", "FROM", "MAINTAINER"):
        raise error(raw.text, f"{keyword} is not allowed as an ONBUILD trigger")
    trigger = RawLine(args, raw.number, raw.heredocs, raw.escape)
    decode(trigger)  # the trigger must be a valid instruction now, not when a later build runs it
    bodies = "".join(f"\n{doc.body}{doc.name}" for doc in raw.heredocs)
    return Onbuild(line=raw.text, trigger=args + bodies)


def _healthcheck(raw: RawLine, args: str) -> Healthcheck:
    line = raw.text
    names = {"interval", "timeout", "start-period", "start-interval", "retries"}
    flags, rest = split_flags(raw, "HEALTHCHECK", args, frozenset(names))
    kind, _, command = rest.partition(" ")
    kind = kind.upper()
    if kind == "NONE":
        if flags or command.strip():
            raise error(line, "HEALTHCHECK NONE takes no other arguments")
        return Healthcheck(line=line, test=("NONE",))
    if kind != "CMD" or not command.strip():
        raise error(line, f"HEALTHCHECK: unknown type '{kind[:32]}' (use CMD <command> or NONE)")
    argv = json_list(command.strip())
    test = ("CMD", *argv) if argv is not None else ("CMD-SHELL", command.strip())
    if argv == []:
        raise error(line, "HEALTHCHECK CMD requires a command")
    durations = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = _one("HEALTHCHECK", flags, name, line)
        if value is not None:
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                raise error(line, f"HEALTHCHECK --{name}: {exc}") from None
            if seconds:  # 0 means the default, as in Docker
                durations[name.replace("-", "_")] = seconds
    retries = _one("HEALTHCHECK", flags, "retries", line)
    if retries is not None and (not retries.isdigit() or int(retries) > 1_000_000):
        raise error(line, f"HEALTHCHECK --retries: expected a number, got '{retries[:32]}'")
    return Healthcheck(line=line, test=test, retries=int(retries) if retries and int(retries) else 3, **durations)


DECODERS: dict[str, Callable[[RawLine, str], Instruction]] = {
    "FROM": _from,
    "RUN": _run,
    "CMD": _command(Cmd),
    "ENTRYPOINT": _command(Entrypoint),
    "ENV": _env,
    "ARG": _arg,
    "COPY": _copy(Copy),
    "ADD": _copy(Add),
    "USER": lambda raw, args: User(line=raw.text, user=args),
    "WORKDIR": lambda raw, args: Workdir(line=raw.text, path=args),
    "EXPOSE": _expose,
    "LABEL": _label,
    "MAINTAINER": lambda raw, args: Maintainer(line=raw.text, pairs=(("maintainer", args),), expand=False),
    "VOLUME": _volume,
    "STOPSIGNAL": _stopsignal,
    "SHELL": _shell,
    "ONBUILD": _onbuild,
    "HEALTHCHECK": _healthcheck,
}


def decode(raw: RawLine) -> Instruction:
    """The instruction on `raw`. Raises `DockerfileError`."""
    line = raw.text
    # str.split, not a regex: a regex with lazy `.*?` before `\s*` is quadratic on long runs of blanks.
    keyword, *rest = line.split(None, 1) or [""]
    args = rest[0].strip() if rest else ""
    decoder = DECODERS.get(keyword.upper()) if keyword.isascii() else None
    if decoder is None:
        raise DockerfileError(INVALID_INSTRUCTION.format(line=line))
    if not args:
        raise error(line, f"{keyword.upper()} requires an argument")
    return decoder(raw, args)
