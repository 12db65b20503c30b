"""`klee volume ...`: volumes are named and identified by their name only.

| command            | request                              |
|--------------------|--------------------------------------|
| create NAME        | POST /volumes/create {"name"} -> 201 |
| ls [-q] [--output] | GET /volumes/list                    |
| inspect NAME       | GET /volumes/{name}/inspect          |
| rm NAME...         | DELETE /volumes/{name}, in order     |
| prune [-f]         | POST /volumes/prune                  |
"""

from __future__ import annotations

import click

from klee.commands.common import (
    inspect_command,
    listing_options,
    print_listing,
    prune_command,
    reply_id,
    reply_list,
)
from klee.completion import complete_volumes
from klee.connection import api_path
from klee.printing import Column, ago
from klee.session import Session, pass_session

COLUMNS = (Column("VOLUME NAME", style="bold aquamarine1"), Column("CREATED", style="bright_white"))


@click.group(name="volume")
def volume() -> None:
    """Manage volumes"""


@volume.command(name="create", no_args_is_help=True)
@click.argument("volume_name")
@pass_session
def create(session: Session, volume_name: str) -> None:
    """Create a new volume. If the volume name already exists nothing happens."""
    reply = session.client.post("/volumes/create", body={"name": volume_name}, ok=(201,))
    session.out.line(reply_id(reply))


@volume.command(name="ls")
@listing_options("volume names")
@pass_session
def listing(session: Session, output: str, quiet: bool) -> None:
    """List volumes"""
    volumes = reply_list(session.client.get("/volumes/list"))
    print_listing(
        session,
        volumes,
        output=output,
        quiet=quiet,
        key="name",
        columns=COLUMNS,
        row=lambda vol: [str(vol.get("name", "")), ago(vol.get("created"))],
    )


@volume.command(name="rm", no_args_is_help=True)
@click.argument("volumes", nargs=-1, required=True, shell_complete=complete_volumes)
@pass_session
def remove(session: Session, volumes: tuple[str, ...]) -> None:
    """Remove one or more volumes. Removal stops at the first volume that cannot be removed."""
    for name in volumes:
        session.out.line(reply_id(session.client.delete(api_path("/volumes/{}", name))))


volume.add_command(
    inspect_command(
        "inspect", "volume", "/volumes/{}/inspect", "Display detailed information on a volume.", complete_volumes
    )
)
volume.add_command(
    prune_command(
        "prune",
        "/volumes/prune",
        "Remove all volumes that are not being mounted into any containers.",
        "WARNING! This will remove all unused volumes.",
    )
)
