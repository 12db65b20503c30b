"""Talking to a running container's monitor (conmon): its attach socket and its control fifo.

The attach socket (`<bundle>/attach`, reached through the short `<state>/attach/<id>` link) is
a SOCK_SEQPACKET unix socket. Each packet conmon sends is one read of the container's output
(at most 8 KiB) behind one byte naming the pipe: 2 stdout, 3 stderr (a TTY's single stream is
stdout). Each packet a client sends is written to the container's stdin; conmon reads at most
32 KiB - 1 bytes of a packet and drops the rest, so input goes in packets of `PACKET` bytes.
When a client shuts down its sending side, conmon closes the container's stdin, unless the
monitor was started with `--leave-stdin-open` (kleened's default, so that a daemon that dies
or restarts never closes a container's stdin). Any number of clients may connect; each gets
every packet from its connection on.

Backpressure: conmon writes each packet to every client with a blocking write, so a client
that stops reading stops the container's output (and its log). The daemon's reader must keep
reading (it drops slow subscribers itself, after the socket).

The control fifo (`<bundle>/ctl`) takes lines `<type> <rows> <cols>`: type 1 resizes the TTY,
type 2 makes conmon reopen the log file (rotation). Opening it never blocks: with no monitor
left to read it, the open fails with ENXIO and the message has no one to go to.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import trio

STDOUT, STDERR = 1, 2  # stream ids, numbered as kleened's fanout numbers them
_PIPES = {2: STDOUT, 3: STDERR}  # conmon's packet tags
PACKET = 8192  # bytes of stdin per packet: well under conmon's 32 KiB - 1 read
RECEIVE = 65536  # more than any packet conmon sends (8 KiB + 1): a packet is never cut
_RESIZE, _REOPEN_LOG = 1, 2
_MAX_WINDOW = 1000  # conmon refuses larger sizes


class AttachConnection:
    """One connection to a container's attach socket; `receive` gives (stream, bytes) pairs."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._send_lock = trio.Lock()  # a packet of input is never interleaved with another's

    @classmethod
    async def connect(cls, path: Path) -> AttachConnection:
        """Connect to the socket at `path`; FileNotFoundError or ConnectionRefusedError when the
        monitor is gone."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            await sock.connect(os.fspath(path))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def receive(self) -> tuple[int, bytes] | None:
        """The next output packet as (STDOUT or STDERR, data); None once the monitor closed the
        connection (the container ended, or the monitor is gone)."""
        while True:
            try:
                packet = await self._sock.recv(RECEIVE)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not packet:
                return None
            stream = _PIPES.get(packet[0])
            if stream is not None and len(packet) > 1:
                return stream, packet[1:]

    async def send(self, data: bytes) -> None:
        """Write `data` to the container's stdin, in packets; waits while its stdin is full.

        Raises trio.BrokenResourceError when the monitor is gone.
        """
        view = memoryview(data)
        async with self._send_lock:
            for start in range(0, len(view), PACKET):
                try:
                    await self._sock.send(view[start:start + PACKET])
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise trio.BrokenResourceError("the container's monitor is gone") from e

    def close_stdin(self) -> None:
        """Shut down our sending side: conmon closes the container's stdin (only for a monitor
        started with `stdin_once`; otherwise the container's stdin stays open)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise

    def close(self) -> None:
        """Close the connection; the container runs on."""
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()


def resize_command(rows: int, cols: int) -> bytes:
    """The control line that sets the TTY size (clamped to what conmon accepts)."""
    rows, cols = (max(0, min(_MAX_WINDOW, n)) for n in (rows, cols))
    return f"{_RESIZE} {rows} {cols}\n".encode()


REOPEN_LOG_COMMAND = f"{_REOPEN_LOG} 0 0\n".encode()


def send_control(ctl: Path, line: bytes) -> bool:
    """Write one control line to the monitor's fifo; False when no monitor reads it any more.

    A line is far below PIPE_BUF, so it is written whole or not at all, and never interleaves
    with another writer's.
    """
    try:
        fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    try:
        os.write(fd, line)
    except OSError as e:
        if e.errno in (errno.EPIPE, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True
