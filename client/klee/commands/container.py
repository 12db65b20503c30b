"""`klee container ...`: containers are found by id, id prefix or name.

| command                         | request                                                  |
|---------------------------------|----------------------------------------------------------|
| ls [-a] [-q] [--output]         | GET /containers/list?all=true|false                      |
| inspect CONTAINER               | GET /containers/{ident}/inspect                          |
| rm [-f] [-v] CONTAINER...       | (-f: POST /containers/{ident}/stop) DELETE /containers/{ident}[?volumes=true] |
| prune [-f]                      | POST /containers/prune                                   |
| stop CONTAINER...               | POST /containers/{ident}/stop                            |
| update [OPTIONS] CONTAINER [CMD]| POST /containers/{ident}/update -> 201                   |
| rename CONTAINER NAME           | POST /containers/{ident}/update {"name"} -> 201          |

create, run, start, restart and exec live in `klee.commands.run`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from klee.commands.common import (
    inspect_command,
    listing_options,
    print_listing,
    prune_command,
    reply_id,
    reply_list,
)
from klee.commands.run import COMMAND_SETTINGS, HELP_RESTART, create, exec_, restart, run, start
from klee.completion import complete_containers
from klee.connection import api_path, query_bool
from klee.errors import ApiError
from klee.limits import limit_fields, limit_options
from klee.printing import Column, Styled, ago
from klee.session import Session, pass_session
from klee.specs import check_restart_policy

COLUMNS = (
    Column("CONTAINER ID", style="cyan"),
    Column("NAME", style="bold aquamarine1"),
    Column("IMAGE", style="blue"),
    Column("COMMAND", style="bright_white", max_width=40),
    Column("CREATED", style="bright_white"),
    Column("AUTORUN", style="bright_white", justify="center"),
    Column("STATUS"),
    Column("JID", style="white"),
    Column("PORTS", style="white"),
)


@click.group(name="container")
def container() -> None:
    """Manage containers"""


@container.command(name="ls")
@click.option(
    "--all",
    "-a",
    "all_",
    is_flag=True,
    default=False,
    help="Show all containers (default only shows running containers)",
)
@listing_options("container ids")
@pass_session
def listing(session: Session, all_: bool, output: str, quiet: bool) -> None:
    """List containers"""
    containers = reply_list(session.client.get("/containers/list", params={"all": query_bool(all_)}))
    print_listing(session, containers, output=output, quiet=quiet, key="id", columns=COLUMNS, row=container_row)


def container_row(item: dict[str, Any]) -> list[str | Styled]:
    """One line of `container ls`."""
    cmd = item.get("cmd")
    jid = item.get("jid")
    return [
        str(item.get("id", "")),
        item.get("name") or "",
        image_cell(item.get("image_name") or "", item.get("image_tag") or "", str(item.get("image_id", ""))),
        "Dockerfile" if cmd is None else " ".join(cmd),
        ago(item.get("created")),
        Styled("yes", "bold") if item.get("restart_policy") == "on-startup" else "no",
        status_cell(item),
        "" if jid is None else str(jid),
        ports_cell(item.get("public_ports") or []),
    ]


def ports_cell(ports: list[Any]) -> str:
    """Published ports in Docker's style: `0.0.0.0:8080->80/tcp` (no interface named: all of the
    daemon's default ones), `eth0:8080->80/tcp`, ranges as `8000-8010`."""
    texts = []
    for port in ports:
        if not isinstance(port, dict):
            continue
        host_port = str(port.get("host_port", "")).replace(":", "-")
        container_port = str(port.get("container_port", "")).replace(":*", "").replace(":", "-")
        for interface in port.get("interfaces") or ["0.0.0.0"]:
            texts.append(f"{interface}:{host_port}->{container_port}/{port.get('protocol', 'tcp')}")
    return ", ".join(texts)


def status_cell(item: dict[str, Any]) -> Styled:
    """running / restarting / stopped, with the health of a running container that has a healthcheck."""
    if not item.get("running"):
        return Styled("restarting", "yellow") if item.get("restarting") else Styled("stopped", "red")
    health = (item.get("health") or {}).get("status")
    if not health:
        return Styled("running", "green")
    return Styled(f"running ({health})", {"healthy": "green", "unhealthy": "red"}.get(health, "yellow"))


def image_cell(name: str, tag: str, image_id: str) -> Styled:
    """`name:tag`, or the image id when the image has no name."""
    if name == "":
        return Styled(image_id, "bold bright_magenta")
    return Styled(f"{name}:{tag}", "bright_blue")


@container.command(name="rm", no_args_is_help=True)
@click.option("--force", "-f", is_flag=True, default=False, help="Stop containers before removing them.")
@click.option("--volumes", "-v", is_flag=True, default=False,
              help="Also remove the anonymous volumes the image's VOLUMEs gave the containers.")
@click.argument("containers", nargs=-1, required=True, shell_complete=complete_containers)
@pass_session
def remove(session: Session, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers. Removal stops at the first container that cannot be removed."""
    params = {"volumes": query_bool(True)} if volumes else None  # upstream's request unless asked
    for ident in containers:
        if force:
            # "container not running" is the usual answer here, and the goal anyway.
            with contextlib.suppress(ApiError):
                session.client.post(api_path("/containers/{}/stop", ident))
        session.out.line(reply_id(session.client.delete(api_path("/containers/{}", ident), params=params)))


@container.command(name="stop", no_args_is_help=True)
@click.argument("containers", nargs=-1, required=True, shell_complete=complete_containers)
@pass_session
def stop(session: Session, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers. Stops at the first container that cannot be stopped."""
    for ident in containers:
        session.out.line(reply_id(session.client.post(api_path("/containers/{}/stop", ident))))


@container.command(name="update", no_args_is_help=True, context_settings=COMMAND_SETTINGS)
@click.option("--name", default=None, help="Assign a new name to the container")
@click.option("--user", "-u", default=None, help="Default user used when running commands in the container")
@click.option(
    "--env",
    "-e",
    multiple=True,
    metavar="list",
    help="Set environment variables, replacing all the stored ones (e.g. `--env A=1 --env B=2`)",
)
@click.option(
    "--jailparam", "-J", multiple=True, metavar="list", help="Set jail parameters, replacing all the stored ones."
)
@click.option("--persist/--no-persist", "-P", default=None, help="Do (not) remove this container when pruning")
@click.option("--restart", default=None, help=HELP_RESTART)
@limit_options
@click.argument("container_ident", metavar="CONTAINER", shell_complete=complete_containers)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
def update(session: Session, container_ident: str, command: tuple[str, ...], **options: Any) -> None:
    """Modify container properties. Properties that are not given keep their value.

    `--env` and `--jailparam` replace all the stored values; COMMAND replaces the stored command.
    Limits change at once in a running container (ulimits, --security-opt and --userns at its
    next start); 0 removes a memory, CPU or share limit.
    """
    restart = options["restart"]
    body = {
        "name": options["name"],
        "user": options["user"],
        "env": list(options["env"]) or None,
        "jail_param": list(options["jailparam"]) or None,
        "cmd": list(command) or None,
        "persist": options["persist"],
        "restart_policy": None if restart is None else check_restart_policy(restart),
        **limit_fields(options),
    }
    session.out.line(
        reply_id(session.client.post(api_path("/containers/{}/update", container_ident), body=body, ok=(201,)))
    )


@container.command(name="rename", no_args_is_help=True)
@click.argument("container_ident", metavar="CONTAINER", shell_complete=complete_containers)
@click.argument("new_name")
@pass_session
def rename(session: Session, container_ident: str, new_name: str) -> None:
    """Rename a container."""
    # Explicit nulls keep every other property, also on upstream kleened, which fills in
    # defaults for absent keys.
    body = {key: None for key in ("user", "env", "jail_param", "cmd", "persist", "restart_policy")}
    body["name"] = new_name
    session.out.line(
        reply_id(session.client.post(api_path("/containers/{}/update", container_ident), body=body, ok=(201,)))
    )


container.add_command(
    inspect_command(
        "inspect",
        "container",
        "/containers/{}/inspect",
        "Display detailed information on a container.",
        complete_containers,
    )
)
container.add_command(
    prune_command(
        "prune",
        "/containers/prune",
        "Remove all stopped containers.",
        "WARNING! This will remove all stopped containers.",
    )
)
for _command in (create, run, start, restart, exec_):
    container.add_command(_command)

from klee.commands.files import commit, cp  # noqa: E402 - after the group they join

container.add_command(cp)
container.add_command(commit)
