"""What `klee attach` and `klee logs` do, without click (the fast path, `klee.fastpath`, and the
click commands in `klee.commands.streams` share it), and the helpers of kleened's container
streams: the config frame and starting message, the closing message, `--since` times.

Output keeps the container's streams apart: its stdout on klee's stdout, its stderr on klee's
stderr. `attach` exits with the container's exit code, or 0 when detached (ctrl-p ctrl-q).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from klee.connection import api_path
from klee.errors import KleeError, UsageError

if TYPE_CHECKING:
    from klee.session import Session

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def time_spec(text: str | None, now: float | None = None) -> str:
    """`--since`/`--until` as kleened takes them: durations become unix seconds, the rest is sent as is."""
    if not text:
        return ""
    if _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text))
        return f"{(time.time() if now is None else now) - seconds:.9f}"
    return text


class _FirstFrame(Exception):
    """Stops `_receive_until_closed` at the first frame (control flow, not an error)."""

    def __init__(self, frame: str | bytes) -> None:
        super().__init__("first frame")
        self.frame = frame


def _open(websocket: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Send the config frame and read the starting message (raising KleeError for a refusal)."""
    from klee.streams import CONNECTION_CLOSED, _as_message, _describe, _receive_until_closed

    websocket.send(json.dumps(config))

    def stop(frame: str | bytes) -> None:
        raise _FirstFrame(frame)

    try:
        closing = _receive_until_closed(websocket, stop)
    except _FirstFrame as first:
        message = _as_message(first.frame)
        if message is None or message["msg_type"] != "starting":
            unexpected = "Error! Unexpected response received from Kleened."
            raise KleeError(_describe(message) if message else unexpected) from None
        return message
    if closing is None:
        raise KleeError(CONNECTION_CLOSED)
    raise KleeError(_describe(closing) or "kleened reported an error")


def _finish(closing: dict[str, Any] | None) -> dict[str, Any]:
    from klee.streams import CONNECTION_CLOSED, _describe

    if closing is None:
        raise KleeError(CONNECTION_CLOSED)
    if closing.get("msg_type") == "error":
        raise KleeError(_describe(closing) or "kleened reported an error", exit_code=1)
    return closing


def attach_command(session: Session, *, no_stdin: bool, detach_keys: str, recent: int, container: str) -> int:
    """Attach to a running container's main process: its output, input and terminal."""
    from klee.specs import exit_code_from_message, shell_exit_status
    from klee.streams import (
        _InputPump,
        _interrupt_on_termination,
        _isatty,
        _raw_terminal,
        _receive_until_closed,
        write_multiplexed,
    )

    config = {"logs": recent, "stdin": not no_stdin, "detach_keys": detach_keys, "multiplex": True}
    with session.client.stream(api_path("/containers/{}/attach", container)) as websocket:
        starting = _open(websocket, config)
        tty = starting.get("data") == "tty"
        raw = tty and not no_stdin and _isatty(sys.stdin)
        with _interrupt_on_termination():
            terminal = _raw_terminal(sys.stdin.fileno()) if raw else contextlib.nullcontext()
            pump = _InputPump.running(websocket, not no_stdin, tty) if tty or not no_stdin else contextlib.nullcontext()
            with terminal, pump:
                closing = _finish(_receive_until_closed(websocket, write_multiplexed))
    message = str(closing.get("message", ""))
    if message.startswith("detached"):
        session.out.status("read escape sequence")
        return 0
    code = exit_code_from_message(message)
    return 0 if code is None else shell_exit_status(code)


def logs_command(session: Session, *, follow: bool, tail: str, since: str | None, until: str | None,
                 timestamps: bool, container: str) -> int:
    """Print a container's log (stdout and stderr of its main process), running or stopped."""
    from klee.streams import _receive_until_closed, write_multiplexed

    if tail != "all" and not tail.isdigit():
        raise UsageError(f"Error! invalid --tail '{tail}': use a number of lines or 'all'")
    config = {"follow": follow, "tail": None if tail == "all" else int(tail), "since": time_spec(since),
              "until": time_spec(until), "timestamps": timestamps, "stdout": True, "stderr": True}
    with session.client.stream(api_path("/containers/{}/logs", container)) as websocket:
        _open(websocket, config)
        _finish(_receive_until_closed(websocket, write_multiplexed))
    return 0
