"""Attaching to a running container's main process: live output, stdin, terminal size, detach.

An attachment is a *lossy* reader of the main process's output (see `fanout`): it never slows
the container, and one that falls `limit` bytes behind is dropped. Several clients may attach
at once; their input goes to the same stdin, in the order it arrives. Leaving an attachment
(detach keys, disconnect, drop) never stops the container.

Detach keys use docker's syntax: comma-separated keys, each a single character or `ctrl-X`
(X in `a`-`z`, `@`, `[`, `\\`, `]`, `^`, `_`). The bytes of a sequence being typed are held
back until it is complete (detach) or broken (they are forwarded), as docker does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import trio

from .errors import InvalidArgument
from .fanout import Chunk, Subscription
from .supervisor import Run

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(spec: str) -> bytes:
    """`"ctrl-p,ctrl-q"` -> b"\\x10\\x11". Raises InvalidArgument with the rule."""
    keys = bytearray()
    for part in spec.split(","):
        lowered = part.lower()
        if len(part) == 1 and part.isascii():
            keys.append(ord(part))
        elif lowered.startswith("ctrl-") and len(part) == 6 and ("a" <= lowered[5] <= "z" or part[5] in _CTRL_SPECIAL):
            keys.append(ord(lowered[5]) - ord("a") + 1 if lowered[5].isalpha() else _CTRL_SPECIAL[part[5]])
        else:
            raise InvalidArgument(
                f"invalid detach keys '{spec}': use comma-separated single characters or ctrl-<a-z,@,[,\\,],^,_>"
            )
    return bytes(keys)


class DetachFilter:
    """Finds the detach sequence in a client's input; `feed` returns (bytes to forward, detached)."""

    def __init__(self, keys: bytes) -> None:
        self._keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self._keys or (not self._held and self._keys[0] not in data):
            return data, False  # the common case: no byte of interest, no per-byte loop
        out = bytearray()
        for byte in data:
            self._held += bytes((byte,))
            if self._keys.startswith(self._held):
                if len(self._held) == len(self._keys):
                    self._held = b""
                    return bytes(out), True  # what follows the sequence in this frame is dropped
                continue
            out += self._held[:-1]  # the sequence broke: what was held goes through...
            last = self._held[-1:]
            self._held = last if self._keys.startswith(last) else b""  # ...and the last byte may restart it
            if not self._held:
                out += last
        return bytes(out), False


@dataclass(eq=False)
class Attachment:
    """One client attached to `run` (a container's main process)."""

    container_id: str
    run: Run
    recent: list[Chunk]
    output: Subscription
    stdin: bool
    detach: DetachFilter
    detached: bool = field(default=False)

    @property
    def tty(self) -> bool:
        return self.run.process.stderr is None  # a TTY process has one stream (see base.Process)

    async def write_stdin(self, data: bytes) -> bool:
        """Forward client input (minus detach keys); True once the detach sequence was typed."""
        forward, detached = self.detach.feed(data)
        stdin = self.run.process.stdin
        if forward and self.stdin and stdin is not None:
            # The process may have closed its stdin or exited: input then has nowhere to go.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async with self.run.stdin_lock:
                    await stdin.send_all(forward)
        self.detached = self.detached or detached
        return detached

    def resize(self, rows: int, cols: int) -> None:
        self.run.process.resize(rows, cols)

    def exit_message(self) -> str:
        code = self.run.exit_code if self.run.exit_code is not None else -1
        return f"container {self.container_id} exited with exit-code {code}"
