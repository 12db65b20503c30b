"""`ContainerFiles` (platform.base): stat, read and write paths of a mounted container root as
tar streams, through the `chroot_tar` process (see there for why a process of its own).

The daemon stays the only reader and writer of the process's pipes: stdout carries one JSON
line (and, for `get`, the tar after it), stdin the tar of a `put`; stderr is kept (bounded) for
the error message. Cancellation (a client that went away) kills the process at once and waits
for it, shielded: a half-written tree stays inside the container, as with an interrupted
`docker cp`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from kleene_protocol.operations import PathStat

from .base import CopyLimits, PathError

LINE_LIMIT = 64 * 1024  # bytes of the JSON line before the tar stream
STDERR_LIMIT = 16 * 1024  # bytes of the helper's error output kept for the message
CHUNK = 256 * 1024
PIPE_SIZE = 1024 * 1024  # bytes; Linux's default pipe-max-size
KILL_DEADLINE = 10.0  # seconds to reap the killed helper


class _Helper:
    """One running `chroot_tar` process and its stdout, read line first."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.stderr_done = trio.Event()

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            data = await self.proc.stdout.receive_some(CHUNK)
            if not data or len(self.buffer) > LINE_LIMIT:
                await self.proc.wait()
                raise PathError("failed", await self.failure("no answer"))
            self.buffer += data
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        result = json.loads(line)
        if "error" in result:
            raise PathError(result.get("kind", "invalid"), result["error"])
        return result

    async def rest(self) -> AsyncIterator[bytes]:
        """What stdout says after the line; raises when the process fails."""
        assert self.proc.stdout is not None
        if self.buffer:
            yield bytes(self.buffer)
            self.buffer.clear()
        while data := await self.proc.stdout.receive_some(CHUNK):
            yield data
        if await self.proc.wait() != 0:
            raise PathError("failed", await self.failure("copy failed"))

    async def keep_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            while data := await self.proc.stderr.receive_some(CHUNK):
                if len(self.stderr) < STDERR_LIMIT:
                    self.stderr += data[: STDERR_LIMIT - len(self.stderr)]
        finally:
            self.stderr_done.set()

    async def failure(self, default: str) -> str:
        with trio.move_on_after(KILL_DEADLINE):
            await self.stderr_done.wait()  # the exited helper's last words
        lines = [line for line in self.stderr.decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else f"{default} (exit status {self.proc.returncode})"


@contextlib.asynccontextmanager
async def _helper(root: Path, *args: str, stdin: bool = False) -> AsyncIterator[_Helper]:
    argv = [sys.executable, "-m", "kleened.platform.chroot_tar", str(root), *args]
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _widen(proc.stdin, proc.stdout)
    helper = _Helper(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(helper.keep_stderr)
            yield helper
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # `keep_stderr` never raises, so the group holds what the block raised: raise it as it
        # was, so that callers catch their own errors and not a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(KILL_DEADLINE):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    await pipe.aclose()


def _widen(*pipes: Any) -> None:
    """Grow the pipes to `PIPE_SIZE` where the host allows it (Linux: F_SETPIPE_SZ): with the default
    64 KiB, 100 MB take 1600 wake-ups of each side, and on a loaded host every wake-up waits for a CPU."""
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    for pipe in pipes:
        if pipe is not None:
            with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: keep the default
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _stat(result: dict[str, Any]) -> PathStat:
    return PathStat(name=result["name"], size=result["size"], mode=result["mode"], mtime=result["mtime"],
                    link_target=result.get("link_target", ""))


class ChrootFiles:
    """`ContainerFiles` for any POSIX host the daemon runs on as root."""

    async def stat(self, root: Path, path: str, follow: bool = False) -> PathStat:
        async with _helper(root, "stat", path, "1" if follow else "0") as helper:
            return _stat(await helper.line())

    @contextlib.asynccontextmanager
    async def read(self, root: Path, path: str, follow: bool = False
                   ) -> AsyncIterator[tuple[PathStat, AsyncIterator[bytes]]]:
        async with _helper(root, "get", path, "1" if follow else "0") as helper:
            info = _stat(await helper.line())
            yield info, helper.rest()

    async def write(self, root: Path, path: str, chunks: AsyncIterator[bytes], limits: CopyLimits) -> tuple[int, int]:
        async with _helper(root, "put", path, str(limits.max_bytes), str(limits.max_entries), stdin=True) as helper:
            assert helper.proc.stdin is not None
            async with helper.proc.stdin:
                try:
                    async for chunk in chunks:
                        await helper.proc.stdin.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the helper stopped reading: its answer says why
            result = await helper.line()
            return result["entries"], result["bytes"]
