"""Parsers for the small languages of klee's flags and kleened's messages.

- `--mount SOURCE:DESTINATION[:rw|ro]` (a SOURCE starting with `/` is a host path, else a volume)
- `--publish HOST_PORT[:CONTAINER_PORT][/PROTOCOL]` or `INTERFACE:HOST_PORT:CONTAINER_PORT[/PROTOCOL]`
- the exit code in an exec's closing message (`... exited with exit-code N`)

Parsers return plain dicts shaped like the API's JSON and raise `UsageError` with the message
upstream klee prints.
"""

from __future__ import annotations

import re
from typing import Any

from klee.errors import UsageError

PROTOCOLS = ("tcp", "udp")
NETWORK_DRIVERS = ("ipnet", "host", "vnet", "disabled")
RESTART_POLICIES = ("no", "on-startup", "always", "unless-stopped", "on-failure")

_EXIT_CODE = re.compile(r"exited with exit-code (-?\d+)\s*$")


def parse_mount(spec: str) -> dict[str, Any]:
    """`"vol:/data:ro"` -> `{"type": "volume", "source": "vol", "destination": "/data", "read_only": True}`."""
    sections = spec.split(":")
    if len(sections) > 3:
        raise UsageError(f"invalid mount format '{spec}'. Max 3 elements seperated by ':'.")
    if len(sections) < 2:
        raise UsageError(f"invalid mount format '{spec}'. Must have at least 2 elements seperated by ':'.")
    if len(sections) == 3 and sections[2] not in ("ro", "rw"):
        raise UsageError(f"invalid mount format '{spec}'. Last element should be either 'ro' or 'rw'.")
    source, destination = sections[0], sections[1]
    if source == "" or destination == "":
        raise UsageError(f"invalid mount format '{spec}'. SOURCE and DESTINATION cannot be empty.")
    return {
        "type": "nullfs" if source.startswith("/") else "volume",
        "source": source,
        "destination": destination,
        "read_only": len(sections) == 3 and sections[2] == "ro",
    }


def parse_publish(spec: str) -> dict[str, Any]:
    """`"em0:8080:80/udp"` -> `{"interfaces": ["em0"], "host_port": "8080", "container_port": "80", "protocol": "udp"}`.

    CONTAINER_PORT defaults to HOST_PORT and PROTOCOL to tcp; without an INTERFACE kleened uses
    the host's default-gateway interface.
    """
    ports, slash, protocol = spec.partition("/")
    if not slash:
        protocol = "tcp"
    if protocol not in PROTOCOLS:
        raise UsageError(f"could not decode port to publish '{spec}': the protocol must be 'tcp' or 'udp'")
    sections = ports.split(":")
    if len(sections) == 3:
        interfaces, host_port, container_port = [sections[0]], sections[1], sections[2]
        if sections[0] == "":
            raise UsageError(f"could not decode port to publish '{spec}': the interface is empty")
    elif len(sections) == 2:
        interfaces, host_port, container_port = [], sections[0], sections[1]
    elif len(sections) == 1:
        interfaces, host_port, container_port = [], sections[0], sections[0]
    else:
        raise UsageError(
            f"could not decode port to publish '{spec}': use HOST_PORT[:CONTAINER_PORT][/PROTOCOL]"
            " or INTERFACE:HOST_PORT:CONTAINER_PORT[/PROTOCOL]"
        )
    for port in (host_port, container_port):
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UsageError(f"could not decode port to publish '{spec}': '{port}' is not a port number (0-65535)")
    return {"interfaces": interfaces, "host_port": host_port, "container_port": container_port, "protocol": protocol}


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """Refuse a value outside `choices`, with upstream's 'could not validate' wording."""
    if value not in choices:
        allowed = ", ".join(f"'{choice}'" for choice in choices)
        raise UsageError(
            f"Error! Could not validate container configuration: '{value}' is not a valid {what} ({allowed})"
        )
    return value


def check_restart_policy(value: str) -> str:
    """A restart policy: one of `RESTART_POLICIES`, or `on-failure:N` (at most N restarts)."""
    name, colon, count = value.partition(":")
    if name == "on-failure" and colon and count.isascii() and count.isdigit():
        return value
    if colon:
        why = "the maximum retry count must be a number" if name == "on-failure" else \
            "only 'on-failure' takes a maximum retry count: 'on-failure:N'"
        raise UsageError(f"Error! Could not validate container configuration: '{value}' is not a valid restart "
                         f"policy ({why})")
    return check_choice(value, RESTART_POLICIES, "restart policy")


def exit_code_from_message(message: str) -> int | None:
    """The exit code in an exec's closing message, or None when it carries none.

    `"executable e1 and its container exited with exit-code 3"` -> 3;
    `"e1 has exited with exit-code 0"` -> 0.
    """
    match = _EXIT_CODE.search(message)
    return int(match.group(1)) if match else None


def shell_exit_status(code: int) -> int:
    """Map a process's exit code into 0-255: a negative code (killed by signal N) is 128 + N."""
    if code < 0:
        return min(128 - code, 255)
    return code if code <= 255 else code % 256
