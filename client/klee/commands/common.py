"""Pieces several command groups share: listings, inspect, prune and remove commands, id replies,
prompts, and the notice about host paths sent to a remote daemon."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from klee.connection import api_path, host_path_notice, remote_daemon, reply_id, reply_list
from klee.errors import UsageError
from klee.printing import Cell, Column
from klee.session import Session, pass_session

__all__ = ["host_path_notice", "remote_daemon", "reply_id", "reply_list"]  # their home is klee.connection

OUTPUT_FORMATS = ("table", "json")
Completer = Callable[[click.Context, click.Parameter, str], list[Any]]


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
