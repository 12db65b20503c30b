"""The processes `RuncRuntime` starts, as the daemon sees them: a pid to reap and trio streams.

Non-TTY: stdin, stdout and stderr are the daemon's ends of three pipes. TTY: stdout reads the
pty master, stdin writes to a dup of it, stderr is None (the terminal merges them), and
`resize` sets the window size on the master (the kernel sends SIGWINCH to the foreground group).
"""

from __future__ import annotations

import array
import errno
import fcntl
import socket
import struct
import termios

import trio

from kleened.platform.linux import reaper


class PtyStream(trio.abc.ReceiveStream):
    """The pty master as a receive stream that ends (b"") when the container side closes.

    Linux reports a closed slave as EIO on the master; callers want plain end-of-file.
    """

    def __init__(self, stream: trio.lowlevel.FdStream) -> None:
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as e:
            if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.EIO:
                return b""
            raise

    def fileno(self) -> int:
        return self._stream.fileno()

    async def aclose(self) -> None:
        await self._stream.aclose()


class RuncProcess:
    """A container init or exec started by `RuncRuntime` (implements `base.Process`)."""

    def __init__(
        self,
        child: reaper.Child,
        stdin: trio.abc.SendStream | None,
        stdout: trio.abc.ReceiveStream,
        stderr: trio.abc.ReceiveStream | None,
        tty: PtyStream | None = None,
    ) -> None:
        self._child = child
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._tty = tty

    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    async def wait(self) -> int:
        return await self._child.wait()

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size (the kernel sends SIGWINCH); a no-op without a TTY or after aclose."""
        if self._tty is None:
            return
        try:
            fd = self._tty.fileno()
        except OSError:
            return
        if fd >= 0:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def signal(self, signum: int) -> None:
        self._child.send_signal(signum)

    async def aclose(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                await stream.aclose()


async def receive_fd(sock: trio.socket.SocketType, out: list[int]) -> None:
    """Accept runc's connection on the console socket and take the pty master it sends."""
    conn, _ = await sock.accept()
    with conn:
        fds = array.array("i")
        _, ancdata, _, _ = await conn.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    out.extend(fds)  # the caller uses one and closes any extra
