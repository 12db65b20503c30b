"""Container lifecycle: `create`, `run`, `start`, `restart` and `exec`.

Kleened starts a container by starting an *execution instance* in it, so every command here
ends in `POST /exec/create` + the `/exec/start` WebSocket:

| command                         | requests                                                    |
|---------------------------------|-------------------------------------------------------------|
| create IMAGE [CMD]              | POST /containers/create -> 201; with -n: POST /networks/connect -> 204 |
| run IMAGE [CMD]                 | create, then POST /exec/create {cmd: []} and WS /exec/start |
| start CONTAINER...              | POST /exec/create {cmd: []} + WS /exec/start, per container |
| restart CONTAINER...            | POST /containers/{id}/stop, then a detached start           |
| exec CONTAINER CMD...           | POST /exec/create {cmd, env, user, tty} + WS /exec/start    |

Unlike upstream klee, `run` and `exec` exit with the process's exit code, and `run --rm`
removes the container once the session ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from klee.commands.common import host_path_notice, reply_id
from klee.completion import complete_choices, complete_containers, complete_images, complete_networks
from klee.connection import api_path
from klee.errors import ApiError, KleeError, UsageError
from klee.limits import limit_fields, limit_options
from klee.session import Session, pass_session
from klee.specs import NETWORK_DRIVERS, RESTART_POLICIES, check_choice, parse_mount, parse_publish

if TYPE_CHECKING:
    from klee.streams import ExecResult

# Options end at IMAGE or CONTAINER: everything after it is the command, dash-options included.
COMMAND_SETTINGS = {"allow_interspersed_args": False}

HELP_PUBLISH = (
    "Publish ports using the syntax HOST_PORT[:CONTAINER_PORT][/PROTOCOL] or "
    "INTERFACE:HOST_PORT:CONTAINER_PORT[/PROTOCOL]. CONTAINER_PORT defaults to HOST_PORT "
    "and PROTOCOL defaults to 'tcp'."
)
HELP_DRIVER = (
    "Network driver of the container: 'ipnet', 'host', 'vnet' or 'disabled'. Without `network` "
    "and `driver` the driver is 'host'; with a `network` but no `driver` it is 'ipnet'."
)
EXEC_CREATED = "created execution instance {exec_id}"
EXEC_STARTED_CONTAINER = (
    "note: container {container} was not running: exec started it with this command as its main process, "
    "so it stopped when the command ended"
)
ONLY_ONE_ATTACHED = "only one container can be started when attaching to container I/O."


def create_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `create` and `run` that configure the container."""
    options = [
        click.option("--name", default=None, help="Assign a name to the container"),
        click.option(
            "--user",
            "-u",
            default="",
            help="Default user that runs commands in the container. The jail parameter `exec.jail_user` overrides it.",
        ),
        click.option(
            "--env", "-e", multiple=True, metavar="list", help="Set environment variables (e.g. `--env A=1 --env B=2`)"
        ),
        click.option(
            "--mount",
            "-m",
            "--volume",
            "-v",
            "mount",
            multiple=True,
            metavar="list",
            help="Mount a volume, directory or file into the container: SOURCE:DESTINATION[:rw|ro]",
        ),
        click.option(
            "--jailparam",
            "-J",
            multiple=True,
            metavar="list",
            help="Set jail parameters, replacing Kleene's defaults of the same name.",
        ),
        click.option("--persist", "-P", is_flag=True, default=False, help="Do not remove this container when pruning"),
        click.option(
            "--restart",
            default="no",
            show_default=True,
            shell_complete=complete_choices(*RESTART_POLICIES),
            help="Restart policy: 'no', or 'on-startup' to start the container whenever Kleened starts.",
        ),
        click.option(
            "--driver", "-l", default=None, help=HELP_DRIVER, shell_complete=complete_choices(*NETWORK_DRIVERS)
        ),
        click.option(
            "--network",
            "-n",
            default=None,
            help="Connect the container to a network.",
            shell_complete=complete_networks,
        ),
        click.option("--ip", default=None, help="IPv4 address on `network` (default: allocate an unused one)."),
        click.option("--ip6", default=None, help="IPv6 address on `network` (default: allocate an unused one)."),
        click.option("--publish", "-p", multiple=True, metavar="list", help=HELP_PUBLISH),
    ]
    for option in reversed(options):
        function = option(function)
    return limit_options(function)


def exec_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """`-d`, `-i` and `-t`, shared by `run`, `start` and `exec`."""
    function = click.option("--tty", "-t", is_flag=True, default=False, help="Allocate a pseudo-TTY")(function)
    function = click.option(
        "--interactive",
        "-i",
        is_flag=True,
        default=False,
        help="Send terminal input to the process's STDIN. If set, `detach` is ignored.",
    )(function)
    return click.option(
        "--detach",
        "-d",
        is_flag=True,
        default=False,
        help="Do not stream the process's output; return once it has started.",
    )(function)


@click.command(name="create", no_args_is_help=True, context_settings=COMMAND_SETTINGS)
@create_options
@click.argument("image", shell_complete=complete_images)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
def create(session: Session, **options: Any) -> None:
    """Create a new container from IMAGE: IMAGE_ID[@SNAPSHOT] or NAME[:TAG][@SNAPSHOT]."""
    create_container(session, options)


@click.command(name="run", no_args_is_help=True, context_settings=COMMAND_SETTINGS)
@create_options
@exec_options
@click.option("--rm", "remove", is_flag=True, default=False, help="Remove the container when its process has exited.")
@click.argument("image", shell_complete=complete_images)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
@click.pass_context
def run(
    ctx: click.Context, session: Session, detach: bool, interactive: bool, tty: bool, remove: bool, **options: Any
) -> None:
    """Run a command in a new container. IMAGE is IMAGE_ID[@SNAPSHOT] or NAME[:TAG][@SNAPSHOT]."""
    detach = detach and not interactive
    if remove and detach:
        raise UsageError("Error! '--rm' cannot be combined with '--detach': klee removes the container after it exits")
    container_id = create_container(session, options, remove_on_failure=remove, status=not detach)
    try:
        result = start_process(session, container_id, attach=not detach, interactive=interactive, tty=tty)
    except KleeError:
        if remove:
            remove_container(session, container_id, running=False)
        raise
    if remove:
        remove_container(session, container_id, running=result.container_running)
    ctx.exit(result.exit_code)


@click.command(name="start", no_args_is_help=True)
@exec_options
@click.argument("containers", nargs=-1, required=True, shell_complete=complete_containers)
@pass_session
@click.pass_context
def start(
    ctx: click.Context, session: Session, detach: bool, interactive: bool, tty: bool, containers: tuple[str, ...]
) -> None:
    """Start one or more stopped containers. Attach only if a single container is started."""
    attach = interactive or not detach
    if attach and len(containers) != 1:
        raise UsageError(ONLY_ONE_ATTACHED)
    exit_code = 0
    for container in containers:
        exit_code = start_process(session, container, attach=attach, interactive=interactive, tty=tty).exit_code
    ctx.exit(exit_code)


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
@exec_options
@click.option(
    "--env", "-e", multiple=True, metavar="list", help="Set environment variables (e.g. `--env A=1 --env B=2`)"
)
@click.option("--user", "-u", default="", help="Username or UID of the user running the process")
@click.argument("container", shell_complete=complete_containers)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_session
@click.pass_context
def exec_(
    ctx: click.Context,
    session: Session,
    detach: bool,
    interactive: bool,
    tty: bool,
    env: tuple[str, ...],
    user: str,
    container: str,
    command: tuple[str, ...],
) -> None:
    """Run a command in a container (a stopped container is started with it)."""
    result = start_process(
        session,
        container,
        attach=interactive or not detach,
        interactive=interactive,
        tty=tty,
        cmd=list(command),
        env=list(env),
        user=user,
    )
    if not result.container_running and command:
        session.out.status(EXEC_STARTED_CONTAINER.format(container=container))
    ctx.exit(result.exit_code)


def container_config(options: dict[str, Any]) -> dict[str, Any]:
    """The `ContainerConfig` body of `POST /containers/create` for the given options."""
    from klee.names import random_name

    driver = options["driver"] or ("ipnet" if options["network"] else "host")
    return {
        "name": options["name"] if options["name"] is not None else random_name(),
        "image": options["image"],
        "cmd": list(options["command"]),
        "user": options["user"],
        "env": list(options["env"]),
        "mounts": [parse_mount(spec) for spec in options["mount"]],
        "jail_param": list(options["jailparam"]),
        "persist": options["persist"],
        "restart_policy": check_choice(options["restart"], RESTART_POLICIES, "restart policy"),
        "network_driver": check_choice(driver, NETWORK_DRIVERS, "network driver"),
        "public_ports": [parse_publish(spec) for spec in options["publish"]],
        **limit_fields(options),
    }


def create_container(
    session: Session, options: dict[str, Any], remove_on_failure: bool = False, status: bool = False
) -> str:
    """Create the container (and connect it to `--network`); print and return its id.

    The id is the result of `create` and `run -d` (stdout), a `status` line of an attached `run`
    (stderr). As upstream, a container whose network connection fails is kept, unless `remove_on_failure`.
    """
    config = container_config(options)
    for mount in config["mounts"]:
        if mount["type"] == "nullfs":
            host_path_notice(session, mount["source"], "bind mount source")
    try:
        container_id = reply_id(session.client.post("/containers/create", body=config, ok=(201,)))
    except ApiError as exc:
        raise KleeError(f"could not create container: {exc.message}") from None
    (session.out.status if status else session.out.line)(container_id)
    if options["network"]:
        endpoint = {
            "container": container_id,
            "network": options["network"],
            "ip_address": options["ip"] if options["ip"] is not None else "<auto>",
            "ip_address6": options["ip6"] if options["ip6"] is not None else "<auto>",
        }
        try:
            session.client.post("/networks/connect", body=endpoint, ok=(204,))
        except ApiError as exc:
            if remove_on_failure:
                remove_container(session, container_id, running=False)
            raise KleeError(f"could not connect container: {exc.message}") from None
    return container_id


def start_process(
    session: Session,
    container: str,
    *,
    attach: bool,
    interactive: bool = False,
    tty: bool = False,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    user: str = "",
) -> ExecResult:
    """Create an execution instance in `container` and start it; return its `ExecResult`."""
    from klee.streams import start_exec

    body = {"container_id": container, "cmd": cmd or [], "env": env or [], "user": user, "tty": tty}
    try:
        exec_id = reply_id(session.client.post("/exec/create", body=body, ok=(201,)))
    except ApiError as exc:
        raise KleeError(f"{container}: error creating execution instance: {exc.message}") from None
    session.out.status(EXEC_CREATED.format(exec_id=exec_id))
    return start_exec(session.client, session.out, exec_id, attach=attach, interactive=interactive, tty=tty)


def remove_container(session: Session, container_id: str, *, running: bool) -> None:
    """`--rm`: stop the container if it may still run, then remove it; failures are reported, not raised."""
    try:
        if running:
            # An error here is most likely "container not running": it stopped meanwhile.
            with contextlib.suppress(ApiError):
                session.client.post(api_path("/containers/{}/stop", container_id))
        session.client.delete(api_path("/containers/{}", container_id))
    except KleeError as exc:
        print(f"could not remove container {container_id}: {exc.message}", file=sys.stderr)
