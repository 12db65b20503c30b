"""Pieces several command groups share: inspect, prune and remove commands, id replies, prompts."""

from __future__ import annotations

import sys
from typing import Any

import click

from klee.connection import api_path
from klee.errors import KleeError, UsageError
from klee.session import Session, pass_session


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


def inspect_command(name: str, argument: str, template: str, docs: str) -> click.Command:
    """`<kind> inspect IDENT`: print the object's JSON."""

    @click.command(name=name, help=docs, no_args_is_help=True)
    @click.argument(argument)
    @pass_session
    def inspect(session: Session, **arguments: str) -> None:
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
