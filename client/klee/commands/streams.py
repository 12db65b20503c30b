"""`klee attach`, `klee logs` and `klee events`: kleened's streams (extensions, docker-like).

| command                                              | stream                                       |
|------------------------------------------------------|----------------------------------------------|
| attach [--no-stdin] [--detach-keys K] [--logs N] C   | WS /containers/{ident}/attach, AttachConfig  |
| logs [-f] [--tail N] [--since T] [--until T] [-t] C  | WS /containers/{ident}/logs, LogsConfig      |
| events [-f k=v]... [--since T] [--until T] [--json]  | WS /events, EventsConfig                     |

Times (`--since`, `--until`) are durations before now (`10m`, `1h30m`, `90s`), RFC 3339
(`2024-05-01T12:00:00Z`) or unix seconds; klee turns durations into unix seconds.
Output keeps the container's streams apart: its stdout on klee's stdout, its stderr on klee's
stderr. `attach` exits with the container's exit code, or 0 when detached (ctrl-p ctrl-q).
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click

from klee.connection import api_path
from klee.errors import KleeError, UsageError
from klee.session import Session, pass_session

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def time_spec(text: str | None, now: float | None = None) -> str:
    """`--since`/`--until` as kleened takes them: durations become unix seconds, the rest is sent as is."""
    if not text:
        return ""
    if _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text))
        return f"{(time.time() if now is None else now) - seconds:.9f}"
    return text


class _FirstFrame(Exception):
    """Stops `_receive_until_closed` at the first frame (control flow, not an error)."""

    def __init__(self, frame: str | bytes) -> None:
        super().__init__("first frame")
        self.frame = frame


def _open(websocket: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Send the config frame and read the starting message (raising KleeError for a refusal)."""
    from klee.streams import CONNECTION_CLOSED, _as_message, _describe, _receive_until_closed

    websocket.send(json.dumps(config))

    def stop(frame: str | bytes) -> None:
        raise _FirstFrame(frame)

    try:
        closing = _receive_until_closed(websocket, stop)
    except _FirstFrame as first:
        message = _as_message(first.frame)
        if message is None or message["msg_type"] != "starting":
            unexpected = "Error! Unexpected response received from Kleened."
            raise KleeError(_describe(message) if message else unexpected) from None
        return message
    if closing is None:
        raise KleeError(CONNECTION_CLOSED)
    raise KleeError(_describe(closing) or "kleened reported an error")


def _finish(closing: dict[str, Any] | None) -> dict[str, Any]:
    from klee.streams import CONNECTION_CLOSED, _describe

    if closing is None:
        raise KleeError(CONNECTION_CLOSED)
    if closing.get("msg_type") == "error":
        raise KleeError(_describe(closing) or "kleened reported an error", exit_code=1)
    return closing


@click.command(name="attach", no_args_is_help=True)
@click.option("--no-stdin", is_flag=True, default=False, help="Do not send klee's input to the container.")
@click.option("--detach-keys", default="", help="Key sequence that detaches (default: kleened's, ctrl-p,ctrl-q).")
@click.option("--logs", "recent", default=0, type=click.IntRange(min=0), metavar="N",
              help="First print the last N lines the container wrote in this run.")
@click.argument("container")
@pass_session
@click.pass_context
def attach(ctx: click.Context, session: Session, no_stdin: bool, detach_keys: str, recent: int,
           container: str) -> None:
    """Attach to a running container's main process: its output, input and terminal."""
    import contextlib

    from klee.specs import exit_code_from_message, shell_exit_status
    from klee.streams import (
        _InputPump,
        _interrupt_on_termination,
        _isatty,
        _raw_terminal,
        _receive_until_closed,
        write_multiplexed,
    )

    config = {"logs": recent, "stdin": not no_stdin, "detach_keys": detach_keys, "multiplex": True}
    with session.client.stream(api_path("/containers/{}/attach", container)) as websocket:
        starting = _open(websocket, config)
        tty = starting.get("data") == "tty"
        raw = tty and not no_stdin and _isatty(sys.stdin)
        with _interrupt_on_termination():
            terminal = _raw_terminal(sys.stdin.fileno()) if raw else contextlib.nullcontext()
            pump = _InputPump.running(websocket, not no_stdin, tty) if tty or not no_stdin else contextlib.nullcontext()
            with terminal, pump:
                closing = _finish(_receive_until_closed(websocket, write_multiplexed))
    message = str(closing.get("message", ""))
    if message.startswith("detached"):
        click.echo("read escape sequence", err=True)
        ctx.exit(0)
    code = exit_code_from_message(message)
    ctx.exit(0 if code is None else shell_exit_status(code))


@click.command(name="logs", no_args_is_help=True)
@click.option("--follow", "-f", is_flag=True, default=False, help="Follow the output until the container stops.")
@click.option("--tail", "-n", default="all", show_default=True, help="Number of lines to show from the end.")
@click.option("--since", default=None, help="Show lines since a time (e.g. 2024-05-01T12:00:00Z) or duration (10m).")
@click.option("--until", default=None, help="Show lines before a time or duration ago.")
@click.option("--timestamps", "-t", is_flag=True, default=False, help="Show the time each line was read.")
@click.argument("container")
@pass_session
def logs(session: Session, follow: bool, tail: str, since: str | None, until: str | None, timestamps: bool,
         container: str) -> None:
    """Print a container's log (stdout and stderr of its main process), running or stopped."""
    from klee.streams import _receive_until_closed, write_multiplexed

    if tail != "all" and not tail.isdigit():
        raise UsageError(f"Error! invalid --tail '{tail}': use a number of lines or 'all'")
    config = {"follow": follow, "tail": None if tail == "all" else int(tail), "since": time_spec(since),
              "until": time_spec(until), "timestamps": timestamps, "stdout": True, "stderr": True}
    with session.client.stream(api_path("/containers/{}/logs", container)) as websocket:
        _open(websocket, config)
        _finish(_receive_until_closed(websocket, write_multiplexed))


@click.command(name="events")
@click.option("--filter", "-f", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only events that match: type=container|exec|image|network|volume, event=ACTION, "
                   "object=ID-OR-NAME. Repeat a key for alternatives.")
@click.option("--since", default=None, help="Replay retained events since a time or duration (10m).")
@click.option("--until", default=None, help="Stop at a time or duration ago.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print each event as one line of JSON.")
@pass_session
def events(session: Session, filters: tuple[str, ...], since: str | None, until: str | None, as_json: bool) -> None:
    """Print kleened's events (state changes of containers, execs, images, networks, volumes) as they happen."""
    from klee.streams import _receive_until_closed

    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"Error! invalid filter '{item}': use KEY=VALUE")
        wanted.setdefault(key, []).append(value)
    config = {"since": time_spec(since), "until": time_spec(until), "filters": wanted}
    out = session.out

    def show(frame: str | bytes) -> None:
        text = frame.decode() if isinstance(frame, bytes) else frame
        out.line(text if as_json else format_event(json.loads(text)))

    with session.client.stream("/events") as websocket:
        _open(websocket, config)
        _finish(_receive_until_closed(websocket, show))


def format_event(event: dict[str, Any]) -> str:
    """docker's line: `<time> <type> <action> <id> (key=value, ...)`."""
    attributes = event.get("attributes") or {}
    suffix = f" ({', '.join(f'{k}={v}' for k, v in sorted(attributes.items()))})" if attributes else ""
    return f"{event.get('time', '')} {event.get('type', '')} {event.get('action', '')} {event.get('id', '')}{suffix}"
