"""Container lifecycle commands: `create`, `run`, `start`, `restart` and `exec`.

Their options are defined once in `klee.options` (shared with the fast path, `klee.fastpath`)
and what they do lives in `klee.actions`; `klee.actions`' docstring lists the requests.
Unlike upstream klee, `run` and `exec` exit with the process's exit code, and `run --rm`
removes the container once the session ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from klee import options as opts
from klee.actions import (
    EXEC_CREATED,
    EXEC_STARTED_CONTAINER,
    ONLY_ONE_ATTACHED,
    container_config,
    create_container,
    exec_command,
    remove_container,
    run_command,
    start_command,
    start_process,
)
from klee.completion import complete_containers, complete_images
from klee.connection import api_path, reply_id
from klee.session import Session, pass_session

__all__ = [
    "EXEC_CREATED", "EXEC_STARTED_CONTAINER", "ONLY_ONE_ATTACHED", "container_config", "create_container",
    "remove_container", "start_process",
]
HELP_RESTART = opts.HELP_RESTART  # `container update` shows the same help

# Options end at IMAGE or CONTAINER: everything after it is the command, dash-options included.
COMMAND_SETTINGS = {"allow_interspersed_args": False}


def create_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `create` and `run` that configure the container (limits and healthcheck included)."""
    return opts.click_options(opts.CONTAINER)(function)


def exec_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """`-d`, `-i` and `-t`, shared by `run`, `start` and `exec`."""
    return opts.click_options(opts.EXEC_MODES)(function)


@click.command(name="create", no_args_is_help=True, context_settings=COMMAND_SETTINGS)
@create_options
@click.argument("image", shell_complete=complete_images)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
def create(session: Session, **options: Any) -> None:
    """Create a new container from IMAGE: IMAGE_ID[@SNAPSHOT] or NAME[:TAG][@SNAPSHOT]."""
    create_container(session, options)


@click.command(name="run", no_args_is_help=True, context_settings=COMMAND_SETTINGS)
@opts.click_options(opts.RUN)
@click.argument("image", shell_complete=complete_images)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
@click.pass_context
def run(ctx: click.Context, session: Session, **options: Any) -> None:
    """Run a command in a new container. IMAGE is IMAGE_ID[@SNAPSHOT] or NAME[:TAG][@SNAPSHOT]."""
    ctx.exit(run_command(session, **options))


@click.command(name="start", no_args_is_help=True)
@exec_options
@click.argument("containers", nargs=-1, required=True, shell_complete=complete_containers)
@pass_session
@click.pass_context
def start(ctx: click.Context, session: Session, **options: Any) -> None:
    """Start one or more stopped containers. Attach only if a single container is started."""
    ctx.exit(start_command(session, **options))


@click.command(name="restart", no_args_is_help=True)
@click.argument("containers", nargs=-1, required=True, shell_complete=complete_containers)
@pass_session
def restart(session: Session, containers: tuple[str, ...]) -> None:
    """Restart one or more containers: stop each one, then start it detached."""
    for container in containers:
        container_id = reply_id(session.client.post(api_path("/containers/{}/stop", container)))
        session.out.line(container_id)
        start_process(session, container_id, attach=False)


@click.command(name="exec", no_args_is_help=True, context_settings=COMMAND_SETTINGS)
@opts.click_options(opts.EXEC)
@click.argument("container", shell_complete=complete_containers)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
@click.pass_context
def exec_(ctx: click.Context, session: Session, **options: Any) -> None:
    """Run a command in a container (a stopped container is started with it)."""
    ctx.exit(exec_command(session, **options))
