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
from typing import Any

import click

from klee import options as opts
from klee.container_streams import _finish, _open, attach_command, logs_command, time_spec
from klee.errors import UsageError
from klee.session import Session, pass_session

__all__ = ["time_spec"]


@click.command(name="attach", no_args_is_help=True)
@opts.click_options(opts.ATTACH)
@click.argument("container")
@pass_session
@click.pass_context
def attach(ctx: click.Context, session: Session, **options: Any) -> None:
    """Attach to a running container's main process: its output, input and terminal."""
    ctx.exit(attach_command(session, **options))


@click.command(name="logs", no_args_is_help=True)
@opts.click_options(opts.LOGS)
@click.argument("container")
@pass_session
def logs(session: Session, **options: Any) -> None:
    """Print a container's log (stdout and stderr of its main process), running or stopped."""
    logs_command(session, **options)


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
