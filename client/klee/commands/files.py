"""`klee container cp` (`klee cp`): copy files between a container and the local machine.

| direction            | requests                                                              |
|----------------------|-----------------------------------------------------------------------|
| CONTAINER:SRC DEST   | GET /containers/{c}/archive/stat?path=SRC, WS /containers/{c}/archive/get |
| SRC CONTAINER:DEST   | GET /containers/{c}/archive/stat?path=DEST, WS /containers/{c}/archive/put |

Docker's rules (`plan`): a file goes to DEST, or into DEST when DEST is a directory; a directory
is created as DEST when DEST does not exist, or copied into DEST when it does, or its contents
copied into DEST when SRC ends with `/.`; a directory never replaces a file; DEST ending with `/`
must be a directory (or, for a directory SRC, one that `cp` creates). `-` as SRC reads a tar from
stdin and extracts it into the directory DEST; `-` as DEST writes the tar to stdout. The server
does the same copies for a remote daemon: local paths are always this machine's.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO

import click

from klee.completion import complete_containers
from klee.connection import api_path
from klee.errors import ApiError, KleeError, UsageError
from klee.session import Session, pass_session
from klee.streams import closing_data, closing_reason

FRAME = 512 * 1024  # bytes per BINARY frame sent (kleened takes frames up to max_ws_message, 1 MiB)


@dataclass(frozen=True)
class Target:
    """Where the copied top entry goes: into `directory`, renamed `name` ("." for contents only)."""

    directory: str
    name: str


def split_location(arg: str) -> tuple[str | None, str]:
    """`CONTAINER:PATH` or a local path (one starting with `/` or `.`, or without `:` before a `/`)."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    container, sep, path = arg.partition(":")
    if not sep or "/" in container or not container:
        return None, arg
    return container, path


def _parent(path: str) -> str:
    trimmed = path.rstrip("/") or "/"
    head = trimmed.rsplit("/", 1)[0] if "/" in trimmed else "."
    return head or "/"


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def plan(src: str, src_is_dir: bool, src_name: str, dest: str, dest_mode: int | None) -> Target:
    """Docker's rules for `cp SRC DEST` (module docstring); `dest_mode` is None when DEST is absent."""
    contents = src_is_dir and (src.endswith("/.") or src == ".")
    if dest_mode is not None and stat.S_ISDIR(dest_mode):
        return Target(dest, "." if contents else src_name)
    if dest_mode is not None:
        if src_is_dir:
            raise UsageError(f"Error! cannot copy a directory to a file: '{dest}'")
        return Target(_parent(dest), _base(dest))
    if dest.endswith("/") and not src_is_dir:
        raise UsageError(f"Error! destination directory '{dest}' does not exist")
    return Target(_parent(dest), _base(dest))


def _rename(name: str, new: str) -> str:
    """`name` with its first component replaced by `new`."""
    parts = name.lstrip("/").split("/", 1)
    rest = parts[1] if len(parts) > 1 else ""
    if new == ".":
        return rest or "."
    return f"{new}/{rest}" if rest else new


@click.command(name="cp", no_args_is_help=True, short_help="Copy files between a container and the local machine")
@click.option("--archive", "-a", is_flag=True, default=False,
              help="Keep the owners (uid/gid) of the files copied into a container (default: root).")
@click.option("--follow-link", "-L", is_flag=True, default=False, help="Copy what a symbolic link SRC points to.")
@click.argument("src")
@click.argument("dest")
@pass_session
def cp(session: Session, src: str, dest: str, archive: bool, follow_link: bool) -> None:
    """Copy SRC to DEST; one of them is CONTAINER:PATH. `-` is a tar stream on stdin or stdout."""
    src_container, src_path = split_location(src)
    dest_container, dest_path = split_location(dest)
    if (src_container is None) == (dest_container is None):
        raise UsageError("Error! copying between containers or between local paths is not supported: "
                         "give exactly one CONTAINER:PATH")
    if src_container is not None:
        if dest_path == "-" and sys.stdout.isatty():
            raise UsageError("Error! refusing to write a tar stream to a terminal: redirect the output")
        _from_container(session, src_container, src_path, dest_path, follow_link)
    else:
        assert dest_container is not None
        _to_container(session, src_path, dest_container, dest_path, archive, follow_link)


def _stat(session: Session, container: str, path: str, follow: bool = False) -> dict[str, Any] | None:
    params = {"path": path, "follow_link": "true" if follow else "false"}
    try:
        reply = session.client.get(api_path("/containers/{}/archive/stat", container), params=params)
    except ApiError as exc:
        if exc.status == 404 and exc.message.startswith("no such file or directory"):
            return None  # the path is missing (an unknown container is an error)
        raise KleeError(f"Error! {exc.message}") from None
    if not isinstance(reply, dict):
        raise KleeError("Error! Unexpected response received from Kleened.")
    return reply


# --- out of a container -----------------------------------------------------------------------


class _Frames(io.RawIOBase):
    """The BINARY frames of a WebSocket as a readable stream; the close frame is kept."""

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._view = memoryview(b"")
        self.closing: dict[str, Any] | None = None
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from klee.wire.websocket import ConnectionClosed

        while not self._view and not self._eof:
            try:
                frame = self._ws.recv()
            except ConnectionClosed as exc:
                self._eof = True
                self.closing = closing_reason(exc)
                break
            if isinstance(frame, bytes):
                self._view = memoryview(frame)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n




def _from_container(session: Session, container: str, src: str, dest: str, follow_link: bool) -> None:
    info = _stat(session, container, src, follow_link)
    if info is None:
        raise KleeError(f"Error! no such file or directory in container {container}: '{src}'")
    if dest != "-":
        try:
            dest_mode: int | None = os.stat(dest).st_mode
        except FileNotFoundError:
            dest_mode = None
        target = plan(src, stat.S_ISDIR(info["mode"]), info["name"], dest, dest_mode)
        if not os.path.isdir(target.directory):
            raise KleeError(f"Error! no such directory: '{target.directory}'")
    with session.client.stream(api_path("/containers/{}/archive/get", container)) as websocket:
        websocket.send(json.dumps({"path": src, "follow_link": follow_link}))
        frames = _Frames(websocket)
        if dest == "-":
            while chunk := frames.read(FRAME):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            try:
                _extract(io.BufferedReader(frames, FRAME), target)
            except tarfile.TarError as exc:  # the stream broke off: the close frame says why, if it came
                while frames.read(FRAME):
                    pass
                closing_data(frames.closing)
                raise KleeError(f"Error! the copy ended early: {exc}") from None
            while frames.read(FRAME):  # the end padding, then the close frame
                pass
        closing_data(frames.closing)


def _keep_modes(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's `tar` filter (every entry inside the directory: no absolute names, no `..`,
    nothing written through a link that leaves it), with the entry's mode bits kept as they were
    in the container (the filter drops setuid and group/other write bits; docker cp keeps them)."""
    checked = tarfile.tar_filter(member, dest)
    return checked.replace(mode=member.mode, deep=False) if member.mode is not None else checked


def _extract(stream: BinaryIO, target: Target) -> None:
    """Extract with the top entry renamed, through `_keep_modes`."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            member.name = _rename(member.name, target.name)
            if member.islnk():
                member.linkname = _rename(member.linkname, target.name)
            try:
                tar.extract(member, target.directory, filter=_keep_modes)
            except tarfile.FilterError as exc:
                raise KleeError(f"Error! refusing to copy: {exc}") from None


# --- into a container ------------------------------------------------------------------------


class _Sender(io.RawIOBase):
    """A writable stream that sends what is written as BINARY frames of at most `FRAME` bytes."""

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        while len(self._pending) >= FRAME:
            self._ws.send(bytes(self._pending[:FRAME]))
            del self._pending[:FRAME]
        return len(data)

    def finish(self) -> None:
        if self._pending:
            self._ws.send(bytes(self._pending))
            self._pending.clear()
        self._ws.send(b"")


def _to_container(session: Session, src: str, container: str, dest: str, archive: bool, follow_link: bool) -> None:
    dest_info = _stat(session, container, dest)
    if src == "-":
        if dest_info is None or not stat.S_ISDIR(dest_info["mode"]):
            raise KleeError(f"Error! destination '{dest}' must be a directory when the source is '-'")
        directory = dest
    else:
        try:
            st = os.stat(src) if follow_link or src.endswith(("/", "/.")) else os.lstat(src)
        except FileNotFoundError:
            raise KleeError(f"Error! no such file or directory: '{src}'") from None
        target = plan(src, stat.S_ISDIR(st.st_mode), _base(src.removesuffix("/.")) or "/", dest,
                      None if dest_info is None else dest_info["mode"])
        directory = target.directory
    with session.client.stream(api_path("/containers/{}/archive/put", container)) as websocket:
        websocket.send(json.dumps({"path": directory}))
        from klee.wire.websocket import ConnectionClosed

        try:
            first = websocket.recv()  # the starting message: the destination is ready
            if not (isinstance(first, str) and '"starting"' in first):
                raise KleeError("Error! Unexpected response received from Kleened.")
            sender = _Sender(websocket)
            if src == "-":
                while chunk := sys.stdin.buffer.read(FRAME):
                    sender.write(chunk)
            else:
                _pack(src, target, sender, archive=archive, follow_link=follow_link)
            sender.finish()
            while True:
                websocket.recv()
        except ConnectionClosed as exc:
            closing = closing_reason(exc)
        except OSError:  # the server closed while we sent: its close frame says why
            closing = _drain_close(websocket)
    closing_data(closing)


def _drain_close(websocket: Any) -> dict[str, Any] | None:
    from klee.wire.websocket import ConnectionClosed

    try:
        while True:
            websocket.recv(5)
    except ConnectionClosed as exc:
        return closing_reason(exc)
    except OSError:
        return None


def _pack(src: str, target: Target, out: io.RawIOBase, *, archive: bool, follow_link: bool) -> None:
    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if not archive:
            info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    if follow_link and os.path.islink(src):
        src = os.path.realpath(src)  # only the source link: links inside a directory stay links
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=target.name, recursive=True, filter=owner)


# --- commit ----------------------------------------------------------------------------------


@click.command(name="commit", no_args_is_help=True, short_help="Create an image from a container's filesystem")
@click.option("--change", "-c", "changes", multiple=True, metavar="LINE",
              help="A Dockerfile line applied to the image: CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, "
                   "SHELL, STOPSIGNAL, USER, VOLUME or WORKDIR (repeatable).")
@click.argument("container", shell_complete=complete_containers)
@click.argument("name", required=False, default="")
@pass_session
def commit(session: Session, container: str, name: str, changes: tuple[str, ...]) -> None:
    """Make an image of the stopped CONTAINER's files, named NAME[:TAG] (untagged without NAME); print its id."""
    from klee.commands.common import reply_id

    reply = session.client.post(api_path("/containers/{}/commit", container),
                                body={"tag": name, "changes": list(changes)}, ok=(201,))
    session.out.line(reply_id(reply))
