"""Pieces several command groups share: listings, inspect, prune and remove commands, id replies,
prompts, and the notice about host paths sent to a remote daemon."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from klee.connection import api_path
from klee.errors import KleeError, UsageError
from klee.printing import Cell, Column
from klee.session import Session, pass_session

OUTPUT_FORMATS = ("table", "json")
Completer = Callable[[click.Context, click.Parameter, str], list[Any]]


def reply_id(reply: Any) -> str:
    """The `id` of an `IdResponse`."""
    if isinstance(reply, dict) and isinstance(reply.get("id"), str):
        return reply["id"]
    raise KleeError("Error! Unexpected response received from Kleened.")


def reply_list(reply: Any) -> list[Any]:
    """A JSON list reply (ids, or objects of a listing)."""
    if isinstance(reply, list):
        return reply
    raise KleeError("Error! Unexpected response received from Kleened.")


def confirm(warning: str, force: bool) -> None:
    """Ask before a destructive command, unless `--force`.

    Without a terminal there is nobody to ask: klee refuses unless `--force` is given, so a
    script never removes things because of what happened to be on its stdin.
    """
    if force:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{warning} Refusing to continue without confirmation: stdin is not a terminal (use --force).")
    click.echo(warning)
    click.confirm("Are you sure you want to continue?", abort=True)


def listing_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--output/--format table|json` and `-q/--quiet`, for every `ls` command."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        function = click.option("--quiet", "-q", is_flag=True, default=False, help=f"Only print {what}, one per line.")(
            function
        )
        return click.option(
            "--output",
            "--format",
            "output",
            type=click.Choice(OUTPUT_FORMATS),
            default="table",
            show_default=True,
            help="Print a table, or the daemon's JSON objects.",
        )(function)

    return decorate


def print_listing(
    session: Session,
    items: list[Any],
    *,
    output: str,
    quiet: bool,
    key: str,
    columns: Sequence[Column],
    row: Callable[[dict[str, Any]], Sequence[Cell]],
) -> None:
    """Print a listing as `-q` (the `key` of each item), JSON, or a table of `row(item)`."""
    if quiet:
        session.out.lines(str(item.get(key, "")) for item in items if isinstance(item, dict))
    elif output == "json":
        session.out.json(items)
    else:
        session.out.table(columns, [row(item) for item in items if isinstance(item, dict)])


def inspect_command(
    name: str, argument: str, template: str, docs: str, complete: Completer | None = None
) -> click.Command:
    """`<kind> inspect IDENT`: print the object's JSON."""

    @click.command(name=name, help=docs, no_args_is_help=True)
    @click.option(
        "--output",
        "--format",
        "output",
        type=click.Choice(("json",)),
        default="json",
        show_default=True,
        help="Output format (JSON is the only one; accepted for symmetry with `ls`).",
    )
    @click.argument(argument, shell_complete=complete)
    @pass_session
    def inspect(session: Session, output: str, **arguments: str) -> None:
        session.out.json(session.client.get(api_path(template, arguments[argument])))

    return inspect


def prune_command(name: str, template: str, docs: str, warning: str) -> click.Command:
    """`<kind> prune [-f]`: remove unused objects and print their ids."""

    @click.command(name=name, help=docs)
    @click.option("--force", "-f", is_flag=True, default=False, help="Do not prompt for confirmation")
    @pass_session
    def prune(session: Session, force: bool) -> None:
        confirm(warning, force)
        session.out.lines(str(item) for item in reply_list(session.client.post(template)))

    return prune


def remote_daemon(session: Session) -> str | None:
    """The daemon's address when it is on another machine (TCP to a non-loopback address), else None."""
    import ipaddress
    from urllib.parse import urlsplit

    from klee.connection import parse_host

    host = parse_host(session.settings.host)
    if host.is_unix:
        return None
    hostname = urlsplit(f"//{host.netloc}").hostname or ""
    if hostname == "localhost":
        return None
    try:
        if ipaddress.ip_address(hostname).is_loopback:
            return None
    except ValueError:
        pass  # a host name: assume another machine
    return host.netloc


def host_path_notice(session: Session, path: str, what: str) -> None:
    """Warn, on one stderr line, that `path` (a bind mount source, a build context) is read on the daemon's host."""
    remote = remote_daemon(session)
    if remote is not None:
        click.echo(
            f"warning: {what} '{path}' is a path on the daemon's host ({remote}), not on this machine",
            err=True,
        )
