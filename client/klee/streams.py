"""The WebSocket sessions: exec (attached, detached, interactive) and image creation.

A stream opens with a JSON config frame from klee; kleened answers with a "starting" message,
raw output frames, and a close frame whose reason is a JSON `WebSocketMessage`. For exec the
closing message carries the process's exit code, which klee returns as its own.

Interactive sessions (`-i`) run a second thread that forwards stdin to kleened as BINARY
frames; with `-t` it also sends the terminal size as a TEXT frame `{"type":"resize",...}` at
the start and on every SIGWINCH. With `-it` on a terminal, the local tty is in raw mode for
the whole session, so Ctrl-C reaches the container's process as a byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from klee.errors import KleeError
from klee.printing import Output
from klee.specs import exit_code_from_message, shell_exit_status

if TYPE_CHECKING:
    from klee.connection import Client
    from klee.wire.websocket import WebSocket as ClientConnection

CLOSE_DETACHED = 1001
CONNECTION_CLOSED = "ERROR! Connection closed unexpectedly."


class ExecResult(NamedTuple):
    exit_code: int
    container_running: bool  # False once kleened reported that the container exited


def start_exec(
    client: Client,
    out: Output,
    exec_id: str,
    *,
    attach: bool,
    start_container: bool = True,
    interactive: bool = False,
    tty: bool = False,
) -> ExecResult:
    """Start exec instance `exec_id`; when attached, stream it until it ends.

    Without a TTY the process's stdout and stderr arrive apart (`multiplex`, an extension) and
    go to klee's stdout and stderr; klee's own status lines go to stderr.
    """
    config: dict[str, Any] = {"exec_id": exec_id, "attach": attach, "start_container": start_container}
    if attach and not tty:
        config["multiplex"] = True
    with client.stream("/exec/start") as websocket:
        websocket.send(json.dumps(config))
        if not attach:
            return _wait_detached(websocket)
        return _attached(websocket, out, interactive=interactive, tty=tty)


def create_image(client: Client, out: Output, config: dict[str, Any]) -> None:
    """Stream `/images/create`: print its progress and the final message and image id."""
    held = _HeldFrame()
    with client.stream("/images/create") as websocket:
        websocket.send(json.dumps(config))
        closing = _first_frame(websocket)
        if closing is _STARTED:
            closing = _receive_until_closed(websocket, held.write)
    if closing is not None and closing.get("msg_type") == "error" and held.frame is not None:
        # kleened sends a failure's reason as a last frame and again in the close reason: print it once.
        if str(held.frame if isinstance(held.frame, str) else held.frame.decode(errors="replace")).strip() \
                not in _describe(closing):
            _write_output(held.frame)
    else:
        held.flush()
    _print_closing(out, closing)


class _HeldFrame:
    """Writes each frame once the next one arrives, so that the last can be judged by the close."""

    def __init__(self) -> None:
        self.frame: str | bytes | None = None

    def write(self, frame: str | bytes) -> None:
        self.flush()
        self.frame = frame

    def flush(self) -> None:
        if self.frame is not None:
            _write_output(self.frame)
        self.frame = None


def _wait_detached(websocket: ClientConnection) -> ExecResult:
    from klee.wire.websocket import ConnectionClosed

    try:
        while True:
            websocket.recv()  # nothing is expected before the close frame
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == CLOSE_DETACHED:
            return ExecResult(exit_code=0, container_running=True)
        closing = _closing_message(exc)
    reason = _describe(closing) if closing else ""
    raise KleeError(f"error starting container: {reason}" if reason else "error starting container")


def _attached(websocket: ClientConnection, out: Output, *, interactive: bool, tty: bool) -> ExecResult:
    raw = interactive and tty and _isatty(sys.stdin)
    try:
        with _interrupt_on_termination():
            closing = _first_frame(websocket)
            if closing is _STARTED:
                terminal = _raw_terminal(sys.stdin.fileno()) if raw else contextlib.nullcontext()
                pump = (
                    _InputPump.running(websocket, interactive, tty) if interactive or tty else contextlib.nullcontext()
                )
                with terminal, pump:
                    closing = _receive_until_closed(websocket, _write_output if tty else write_multiplexed)
    except KeyboardInterrupt as exc:
        websocket.close(1000, "interrupted by user")
        out.status("")
        signum = exc.signum if isinstance(exc, _Terminated) else signal.SIGINT
        return ExecResult(exit_code=128 + signum, container_running=True)
    message = _print_closing(out, closing, status=True)
    code = exit_code_from_message(message)
    return ExecResult(
        exit_code=0 if code is None else shell_exit_status(code),
        container_running="and its container exited" not in message,
    )


_STARTED: dict[str, Any] = {"msg_type": "starting"}


def _first_frame(websocket: ClientConnection) -> dict[str, Any] | None:
    """Read the first frame: `_STARTED` for the "starting" message, else the closing message.

    Output that arrives before any starting message (older daemons send an error text first)
    is printed rather than dropped.
    """
    from klee.wire.websocket import ConnectionClosed

    try:
        frame = websocket.recv()
    except ConnectionClosed as exc:
        return _closing_message(exc)
    message = _as_message(frame)
    if message is None:
        _write_output(frame)
    elif message["msg_type"] == "error":
        raise KleeError(_describe(message) or "kleened reported an error")
    return _STARTED


def _receive_until_closed(websocket: ClientConnection, write: Any) -> dict[str, Any] | None:
    """Pass every frame to `write` until the close frame; return its JSON reason (or None)."""
    from klee.wire.websocket import ConnectionClosed

    try:
        while True:
            write(websocket.recv())
    except ConnectionClosed as exc:
        return _closing_message(exc)


def _print_closing(out: Output, closing: dict[str, Any] | None, status: bool = False) -> str:
    """Print the closing message as upstream klee does: an empty line, the message, the data
    (on stderr when it is a `status`, not the command's result)."""
    if closing is None:
        raise KleeError(CONNECTION_CLOSED)
    message = str(closing.get("message", ""))
    if closing.get("msg_type") == "error":
        raise KleeError(_describe(closing) or "kleened reported an error")
    line = out.status if status else out.line
    line("")
    line(message)
    if closing.get("data"):
        line(str(closing["data"]))
    return message


def _describe(message: dict[str, Any]) -> str:
    """An error message with its `data` (kleened puts the reason there): "message: data"."""
    text, data = str(message.get("message") or ""), str(message.get("data") or "")
    return f"{text}: {data}" if text and data else text or data


def closing_reason(exc: Any) -> dict[str, Any] | None:
    """The JSON object in a WebSocket close's reason, or None when there is none."""
    if exc.rcvd is None or not exc.rcvd.reason:
        return None
    try:
        closing = json.loads(exc.rcvd.reason)
    except ValueError:
        return None
    return closing if isinstance(closing, dict) else None


def closing_data(closing: dict[str, Any] | None) -> str:
    """The `data` of a successful close; a KleeError for an error close or none at all."""
    if closing is None:
        raise KleeError(CONNECTION_CLOSED)
    if closing.get("msg_type") == "error":
        raise KleeError(str(closing.get("message") or "kleened reported an error"))
    return str(closing.get("data") or "")


def _closing_message(exc: Any) -> dict[str, Any] | None:
    if exc.rcvd is None:
        return None
    message = _as_message(exc.rcvd.reason)
    if message is None or message["msg_type"] == "starting":
        return None
    return message


def _as_message(frame: str | bytes) -> dict[str, Any] | None:
    """A `WebSocketMessage` as a dict, or None when `frame` is not one."""
    if not frame or (frame[:1] not in ("{", b"{")):
        return None
    try:
        data = json.loads(frame)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("msg_type") not in ("starting", "closing", "error"):
        return None
    return data


def _write_output(frame: str | bytes) -> None:
    data = frame.encode() if isinstance(frame, str) else frame
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def write_multiplexed(frame: str | bytes) -> None:
    """A frame whose first byte names the stream: 1 stdout, 2 stderr."""
    if isinstance(frame, str) or not frame:
        return
    target = sys.stderr.buffer if frame[0] == 2 else sys.stdout.buffer
    target.write(frame[1:])
    target.flush()


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return None


def _isatty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of the local terminal, or None when there is none."""
    for stream in (sys.stdout, sys.stdin, sys.stderr):
        try:
            size = os.get_terminal_size(stream.fileno())
        except (AttributeError, ValueError, OSError):
            continue
        return size.lines, size.columns
    return None


def resize_frame(rows: int, cols: int) -> str:
    """The TEXT frame that resizes the session's terminal (a `kleene_protocol` extension)."""
    from kleene_protocol.codec import encode
    from kleene_protocol.websocket import WindowSize

    return encode(WindowSize(rows=rows, cols=cols)).decode()


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):  # the terminal may be gone (SIGHUP)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _interrupt_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP end the session like Ctrl-C, so the terminal is always restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise _Terminated(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _InputPump(threading.Thread):
    """Forwards stdin and window-size changes to the WebSocket, from its own thread.

    Signals only wake it up through a pipe: a signal handler that sent frames itself could
    deadlock with the main thread inside the WebSocket.
    """

    def __init__(self, websocket: ClientConnection, forward_stdin: bool, resize: bool) -> None:
        super().__init__(name="klee-stdin", daemon=True)
        self.websocket = websocket
        self.stdin_fd: int | None = _fileno(sys.stdin) if forward_stdin else None
        self.resize = resize
        self.wake_read, self.wake_write = os.pipe()

    @classmethod
    @contextlib.contextmanager
    def running(cls, websocket: ClientConnection, forward_stdin: bool, resize: bool) -> Iterator[None]:
        pump = cls(websocket, forward_stdin, resize)
        previous = None
        if resize and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGWINCH, lambda _signum, _frame: pump.wake(b"w"))
        pump.start()
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGWINCH, previous)
            pump.wake(b"q")
            pump.join(timeout=1.0)
            os.close(pump.wake_read)
            os.close(pump.wake_write)

    def wake(self, reason: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_write, reason)

    def run(self) -> None:
        from klee.wire.websocket import ConnectionClosed

        try:
            if self.resize:
                self._send_size()
            while self._step():
                pass
        except (ConnectionClosed, OSError):
            return  # the main thread sees the close and reports it

    def _step(self) -> bool:
        watched = [self.wake_read] + ([self.stdin_fd] if self.stdin_fd is not None else [])
        readable, _, _ = select.select(watched, [], [])
        if self.wake_read in readable:
            reasons = os.read(self.wake_read, 64)
            if b"q" in reasons:
                return False
            if b"w" in reasons:
                self._send_size()
        if self.stdin_fd is not None and self.stdin_fd in readable:
            chunk = os.read(self.stdin_fd, 4096)
            if not chunk:  # end of input: the protocol cannot pass it on, so stop reading
                self.stdin_fd = None
                return self.resize
            self.websocket.send(chunk)  # bytes: a BINARY frame
        return True

    def _send_size(self) -> None:
        size = terminal_size()
        if size is not None:
            self.websocket.send(resize_frame(*size))
