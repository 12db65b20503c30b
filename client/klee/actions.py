"""What the container commands do, without click: `run`, `start` and `exec` (and `create`), so
that klee's fast path (`klee.fastpath`) and the click commands (`klee.commands.run`) share it.

Kleened starts a container by starting an *execution instance* in it, so every start here
ends in `POST /exec/create` + the `/exec/start` WebSocket:

| command                         | requests                                                    |
|---------------------------------|-------------------------------------------------------------|
| create IMAGE [CMD]              | POST /containers/create -> 201; with -n: POST /networks/connect -> 204 |
| run IMAGE [CMD]                 | create, then POST /exec/create {cmd: []} and WS /exec/start |
| start CONTAINER...              | POST /exec/create {cmd: []} + WS /exec/start, per container |
| exec CONTAINER CMD...           | POST /exec/create {cmd, env, user, tty} + WS /exec/start    |

Each `*_command` function takes the parsed options (the `dest` names of `klee.options`) and
returns klee's exit code: the process's own for attached sessions.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

from klee.connection import api_path, host_path_notice, reply_id
from klee.errors import ApiError, KleeError, UsageError
from klee.health import health_fields
from klee.limits import limit_fields
from klee.specs import NETWORK_DRIVERS, check_choice, check_restart_policy, parse_mount, parse_publish

if TYPE_CHECKING:
    from klee.session import Session
    from klee.streams import ExecResult

EXEC_CREATED = "created execution instance {exec_id}"
EXEC_STARTED_CONTAINER = (
    "note: container {container} was not running: exec started it with this command as its main process, "
    "so it stopped when the command ended"
)
ONLY_ONE_ATTACHED = "only one container can be started when attaching to container I/O."


def run_command(
    session: Session, *, detach: bool, interactive: bool, tty: bool, remove: bool, **options: Any
) -> int:
    """`run`: create the container, start its process, with `--rm` remove it after."""
    detach = detach and not interactive
    if remove and detach:
        raise UsageError("Error! '--rm' cannot be combined with '--detach': klee removes the container after it exits")
    if remove and options["restart"] not in ("no", "on-startup"):
        raise UsageError(f"Error! '--rm' cannot be combined with '--restart {options['restart']}': "
                         "a container that restarts is not removed when it exits")
    container_id = create_container(session, options, remove_on_failure=remove, status=not detach)
    try:
        result = start_process(session, container_id, attach=not detach, interactive=interactive, tty=tty)
    except KleeError:
        if remove:
            remove_container(session, container_id, running=False)
        raise
    if remove:
        remove_container(session, container_id, running=result.container_running)
    return result.exit_code


def start_command(session: Session, *, detach: bool, interactive: bool, tty: bool, containers: tuple[str, ...]) -> int:
    """`start`: one process per container; attached only when there is one container."""
    attach = interactive or not detach
    if attach and len(containers) != 1:
        raise UsageError(ONLY_ONE_ATTACHED)
    exit_code = 0
    for container in containers:
        exit_code = start_process(session, container, attach=attach, interactive=interactive, tty=tty).exit_code
    return exit_code


def exec_command(
    session: Session, *, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...], user: str, container: str,
    command: tuple[str, ...],
) -> int:
    """`exec`: a process in the container. A stopped container is started with it as its main
    process (upstream's behaviour), and one note on stderr says so: an attached session learns
    it from the closing message, a detached one asks first (one more request, `-d` only)."""
    attach = interactive or not detach
    stopped_before = bool(command) and not attach and not _running(session, container)
    result = start_process(session, container, attach=attach, interactive=interactive, tty=tty, cmd=list(command),
                           env=list(env), user=user)
    if command and (stopped_before or not result.container_running):
        session.out.status(EXEC_STARTED_CONTAINER.format(container=container))
    return result.exit_code


def _running(session: Session, container: str) -> bool:
    """Whether the container runs; True when that cannot be told (the start reports the error)."""
    try:
        reply = session.client.get(api_path("/containers/{}/inspect", container))
    except ApiError:
        return True
    state = reply.get("container") if isinstance(reply, dict) else None
    return not isinstance(state, dict) or bool(state.get("running", True))


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
        "restart_policy": check_restart_policy(options["restart"]),
        "network_driver": check_choice(driver, NETWORK_DRIVERS, "network driver"),
        "public_ports": [parse_publish(spec) for spec in options["publish"]],
        **limit_fields(options),
        **health_fields(options),
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
