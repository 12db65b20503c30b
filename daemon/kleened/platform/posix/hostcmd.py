"""The one way the Linux drivers run host commands (`runc`, `mount`, `umount`, ...).

Every command: an argv list (never a shell), closed fds (trio's default), a timeout, a DEBUG line
with argv, return code and milliseconds, and `HostCommandError` when it fails. stdout comes back
decoded; stderr goes into the error.

On cancellation the command is SIGKILLed at once instead of trio's TERM + 5 s grace: host
commands are short, and the caller's cleanup (`runc delete -f`, `umount`) repairs whatever a
half-run command left, so waiting would only stall the cancel.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from kleened.platform.base import HostCommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds; runc and mount finish in milliseconds when the host is healthy


async def _kill_now(proc: trio.Process) -> None:
    proc.kill()


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


async def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    cwd: Path | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> str:
    """Run `argv` to completion; return its stdout. Raise `HostCommandError` on rc != 0 or timeout.

    `stdin`/`stdout`/`stderr` take fds to hand to the command instead of capturing (runc passes
    them to the container); a stream given as an fd is not captured and not reported. `env`
    replaces the environment (None: the daemon's); `pass_fds` are the only other fds it inherits.
    """
    args = [os.fspath(a) for a in argv]
    start = time.monotonic()
    options: dict = {
        "stdin": stdin if stdin is not None else (input or b""),
        "check": False,
        "cwd": cwd,
        "deliver_cancel": _kill_now,
        "env": env,
        "pass_fds": tuple(pass_fds),
    }
    if stdout is None:
        options["capture_stdout"] = True
    else:
        options["stdout"] = stdout
    if stderr is None:
        options["capture_stderr"] = True
    else:
        options["stderr"] = stderr
    try:
        with trio.fail_after(timeout):
            proc = await trio.run_process(args, **options)
    except trio.TooSlowError:
        log.debug("host command timed out", extra={"argv": args, "ms": _ms(start)})
        raise HostCommandError(args, -9, f"timed out after {timeout:g} s") from None
    log.debug("host command", extra={"argv": args, "rc": proc.returncode, "ms": _ms(start)})
    if proc.returncode != 0:
        raise HostCommandError(args, proc.returncode, _decode(proc.stderr))
    return _decode(proc.stdout)


def run_sync(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Blocking variant for the rare synchronous interface method (`Runtime.version`)."""
    args = list(argv)
    start = time.monotonic()
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise HostCommandError(args, -9, f"timed out after {timeout:g} s") from None
    log.debug("host command", extra={"argv": args, "rc": proc.returncode, "ms": _ms(start)})
    if proc.returncode != 0:
        raise HostCommandError(args, proc.returncode, _decode(proc.stderr))
    return _decode(proc.stdout)


def _ms(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.1f}"
