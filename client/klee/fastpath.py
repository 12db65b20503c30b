"""klee's fast path: `run`, `exec`, `start`, `attach` and `logs` without importing click or rich.

These commands are the ones scripts call in loops, and click alone costs about as much to
import as the rest of klee. The parser here reads the option tables of `klee.options` (the
same ones the click commands are built from) and understands what click does with them: long
options with `--opt value` or `--opt=value`, short ones with `-o value` or `-ovalue`, grouped
short switches (`-it`), repeated options, `--` and, for `run`/`exec`, the end of options at the
first argument (the command that follows keeps its dashes).

It never reports an error itself: whenever the command line is anything but a plain, valid
use of a hot command (`--help`, an unknown option, a bad number or choice, a missing argument,
another command), `parse` returns None and klee runs the click command, which then prints
the same help or the same error as always. So both paths behave alike by construction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from klee import options as opts
from klee.options import Opt


class Fallback(Exception):
    """The command line needs click (help, an error, an option the tables do not have)."""


class Command(NamedTuple):
    table: tuple[Opt, ...]
    arguments: tuple[str, ...]  # names of the positional arguments; a trailing "*" takes the rest
    interspersed: bool  # options may follow arguments (click's default); False: they end at the first


COMMANDS: dict[str, Command] = {
    "run": Command(opts.RUN, ("image", "command*"), interspersed=False),
    "exec": Command(opts.EXEC, ("container", "command*"), interspersed=False),
    "start": Command(opts.EXEC_MODES, ("containers*",), interspersed=True),
    "attach": Command(opts.ATTACH, ("container",), interspersed=True),
    "logs": Command(opts.LOGS, ("container",), interspersed=True),
}
GROUPED = {"container": ("run", "exec", "start")}  # `klee container run ...` is the same command


class Parsed(NamedTuple):
    root: dict[str, Any]  # the root options given (None when absent)
    command: str
    options: dict[str, Any]  # every option and argument of the command, by `dest`


def parse(argv: list[str]) -> Parsed | None:
    """The parsed command line of a hot command, or None when click must handle it."""
    try:
        root, rest = _parse_options(opts.ROOT, argv, interspersed=False)
        if not rest:
            return None
        name, rest = rest[0], rest[1:]
        if name in GROUPED:
            if not rest or rest[0] not in GROUPED[name]:
                return None
            name, rest = rest[0], rest[1:]
        command = COMMANDS.get(name)
        if command is None:
            return None
        values, arguments = _parse_options(command.table, rest, interspersed=command.interspersed)
        values.update(_bind(command.arguments, arguments))
    except Fallback:
        return None
    return Parsed({k: v for k, v in root.items() if v is not None}, name, values)


def _parse_options(table: tuple[Opt, ...], args: list[str], *, interspersed: bool) -> tuple[dict[str, Any], list[str]]:
    """(values by dest, with defaults; the remaining arguments)."""
    by_name = {name: opt for opt in table for name in (*opt.names, *opt.secondary)}
    values: dict[str, Any] = {opt.dest: (() if opt.multiple else opt.default) for opt in table}
    arguments: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            arguments.extend(args[index:])
            break
        if not arg.startswith("-") or arg == "-":
            arguments.append(arg)
            if not interspersed:
                arguments.extend(args[index:])
                break
            continue
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            opt = by_name.get(name)
            if opt is None:
                raise Fallback(arg)  # --help, --version, or unknown
            if opt.flag:
                if eq:
                    raise Fallback(arg)
                values[opt.dest] = name not in opt.secondary
                continue
            if not eq:
                if index >= len(args):
                    raise Fallback(arg)
                inline, index = args[index], index + 1
            _store(values, opt, inline)
            continue
        index = _short_group(by_name, values, arg, args, index)
    return values, arguments


def _short_group(by_name: dict[str, Opt], values: dict[str, Any], arg: str, args: list[str], index: int) -> int:
    """`-it`, `-n net`, `-nnet`, `-itu root`: switches, then at most one option that takes a value."""
    for position in range(1, len(arg)):
        opt = by_name.get(f"-{arg[position]}")
        if opt is None:
            raise Fallback(arg)
        if opt.flag:
            values[opt.dest] = True
            continue
        value = arg[position + 1 :]
        if not value:
            if index >= len(args):
                raise Fallback(arg)
            value, index = args[index], index + 1
        _store(values, opt, value)
        break
    return index


def _store(values: dict[str, Any], opt: Opt, text: str) -> None:
    value: Any = text
    if opt.choices is not None and text not in opt.choices:
        raise Fallback(text)
    if opt.type is not None:
        try:
            value = opt.type(text)
        except ValueError:
            raise Fallback(text) from None
        if opt.minimum is not None and value < opt.minimum:
            raise Fallback(text)
    values[opt.dest] = (*values[opt.dest], value) if opt.multiple else value


def _bind(names: tuple[str, ...], arguments: list[str]) -> dict[str, Any]:
    bound: dict[str, Any] = {}
    for position, name in enumerate(names):
        if name.endswith("*"):
            rest = tuple(arguments[position:])
            if not rest and position == 0:
                raise Fallback(name)  # `klee start` alone: click prints the usage
            bound[name[:-1]] = rest
            return bound
        if position >= len(arguments):
            raise Fallback(name)
        bound[name] = arguments[position]
    if len(arguments) > len(names):
        raise Fallback("extra arguments")
    return bound


def run(parsed: Parsed) -> int:
    """Run a parsed hot command; return klee's exit code (errors raise `KleeError`)."""
    from klee.session import Session

    session = Session(parsed.root)
    try:
        if parsed.command in ("attach", "logs"):
            from klee import container_streams

            action = container_streams.attach_command if parsed.command == "attach" else container_streams.logs_command
        else:
            from klee import actions

            action = {"run": actions.run_command, "exec": actions.exec_command, "start": actions.start_command}[
                parsed.command
            ]
        return action(session, **parsed.options)
    finally:
        session.close()
