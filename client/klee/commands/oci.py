"""Registries and archives: `klee image pull|push|save|load` (shortcuts `klee pull`, ...) and `klee login|logout`.

| command                               | request                                                      |
|---------------------------------------|--------------------------------------------------------------|
| image pull [--platform P] REFERENCE   | WS /images/pull, config frame ImagePullConfig                |
| image push IMAGE [REFERENCE]          | WS /images/push, config frame ImagePushConfig                |
| image save IMAGE... [-o FILE]         | WS /images/save, config frame ImageSaveConfig; BINARY frames |
| image load [-i FILE] [-t NAMETAG]     | WS /images/load, config frame, the archive in BINARY frames   |
| login [-u USER] [--password-stdin] R  | POST /registries/login, then the credentials file            |
| logout REGISTRY                       | the credentials file only                                    |

Credentials live in `~/.klee/auth.json` (`$KLEE_AUTH_FILE`), mode 0600, Docker's format; klee sends its
entries with each pull, push and build, and kleened uses the one of the registry a reference resolves to.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from klee.commands.build import image
from klee.errors import UsageError
from klee.session import Session, pass_session
from klee.streams import closing_data, closing_reason

__all__ = ["image", "login", "logout"]

AUTH_FILE = "~/.klee/auth.json"
CHUNK = 256 * 1024


def auth_path() -> Path:
    return Path(os.environ.get("KLEE_AUTH_FILE") or os.path.expanduser(AUTH_FILE))


def credentials() -> dict[str, dict[str, str]]:
    """Every entry of the credentials file, as `ImagePullConfig.credentials` takes them."""
    from kleene_protocol import auth

    path = auth_path()
    if not path.is_file():
        return {}
    try:
        entries = auth.decode(path.read_bytes()).auths
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    found = {}
    for key in entries:
        pair = auth.lookup(auth.AuthFile(auths={key: entries[key]}), key)
        if pair is not None:
            found[auth.registry_key(key)] = {"username": pair[0], "password": pair[1]}
    return found


@image.command(name="pull", no_args_is_help=True, short_help="Pull an image from a registry")
@click.option("--platform", default="", help="os/arch[/variant] to pull from a multi-platform image (default: "
              "the daemon's host)")
@click.argument("reference")
@pass_session
def pull(session: Session, reference: str, platform: str) -> None:
    """Pull REFERENCE ([registry/]repository[:tag][@digest]); `busybox` is docker.io/library/busybox:latest."""
    config = {"reference": reference, "platform": platform, "credentials": credentials()}
    image_id = run_stream(session, "/images/pull", config)
    session.out.line(image_id)


@image.command(name="push", no_args_is_help=True, short_help="Push an image to a registry")
@click.argument("image_ident", metavar="IMAGE")
@click.argument("reference", required=False, default="")
@pass_session
def push(session: Session, image_ident: str, reference: str) -> None:
    """Push IMAGE to REFERENCE (default: IMAGE's name:tag, which then names the registry)."""
    config = {"image": image_ident, "reference": reference, "credentials": credentials()}
    session.out.line(f"sha256:{run_stream(session, '/images/push', config)}")


@image.command(name="save", no_args_is_help=True, short_help="Save images to an OCI archive")
@click.option("--output", "-o", default=None, help="The archive to write (default: standard output).")
@click.argument("images", nargs=-1, required=True)
@pass_session
def save(session: Session, images: tuple[str, ...], output: str | None) -> None:
    """Write IMAGES as one OCI image layout archive (tar) that docker, podman and kleened load."""
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal: use -o FILE or redirect the output")
    target = Path(output) if output else None
    partial = target.with_name(target.name + ".part") if target else None
    sink = open(partial, "wb") if partial else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        with session.client.stream("/images/save") as websocket:
            websocket.send(json.dumps({"images": list(images)}))
            closing = _receive(websocket, lambda frame: sink.write(frame) if isinstance(frame, bytes) else None)
        closing_data(closing)
    except BaseException:
        if partial:
            sink.close()
            partial.unlink(missing_ok=True)
        raise
    if partial and target:
        sink.close()
        partial.rename(target)


@image.command(name="load", short_help="Load images from an OCI or docker archive")
@click.option("--input", "-i", "input_", default=None, help="The archive to read (default: standard input).")
@click.option("--tag", "-t", default="", help="name:tag for an image that has none in the archive.")
@pass_session
def load(session: Session, input_: str | None, tag: str) -> None:
    """Load the images of an OCI image layout archive or a `docker save` archive (tar, optionally gzip)."""
    source = open(input_, "rb") if input_ else sys.stdin.buffer  # noqa: SIM115 - closed below
    try:
        with session.client.stream("/images/load") as websocket:
            websocket.send(json.dumps({"tag": tag}))
            while chunk := source.read(CHUNK):
                websocket.send(chunk)
            websocket.send(b"")
            closing = _receive(websocket, lambda frame: _print_text(session, frame))
    finally:
        if input_:
            source.close()
    for image_id in closing_data(closing).split(","):
        session.out.line(image_id)


@click.command(name="login", short_help="Log in to a registry")
@click.option("--username", "-u", default=None, help="The user name (asked when not given).")
@click.option("--password-stdin", is_flag=True, default=False, help="Read the password from standard input.")
@click.argument("registry", required=False, default="docker.io")
@pass_session
def login(session: Session, registry: str, username: str | None, password_stdin: bool) -> None:
    """Check credentials for REGISTRY (host[:port], default docker.io) with kleened; keep them in ~/.klee/auth.json."""
    from kleene_protocol import auth

    if username is None:
        username = click.prompt("Username")
    password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt("Password", hide_input=True)
    if not username or not password:
        raise UsageError("a user name and a password are needed")
    session.client.post("/registries/login", body={"registry": registry, "username": username, "password": password})
    path = auth_path()
    current = auth.decode(path.read_bytes()) if path.is_file() else auth.AuthFile()
    _write_private(path, auth.encode(auth.store(current, registry, username, password)))
    session.out.line(f"Login Succeeded ({auth.registry_key(registry)}, credentials in {path})")


@click.command(name="logout", short_help="Forget the credentials of a registry")
@click.argument("registry", required=False, default="docker.io")
@pass_session
def logout(session: Session, registry: str) -> None:
    """Remove REGISTRY's entry from ~/.klee/auth.json."""
    from kleene_protocol import auth

    path = auth_path()
    if path.is_file():
        _write_private(path, auth.encode(auth.remove(auth.decode(path.read_bytes()), registry)))
    session.out.line(f"Removed the credentials of {auth.registry_key(registry)}")


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the start (never readable by others, even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
    tmp.rename(path)


# --- streams ------------------------------------------------------------------------------------


def run_stream(session: Session, endpoint: str, config: dict[str, Any]) -> str:
    """Send `config`, show the progress frames, return the closing message's data."""
    from klee.progress import LayerProgress

    with LayerProgress(session.out) as view, session.client.stream(endpoint) as websocket:
        websocket.send(json.dumps(config))
        closing = _receive(websocket, view.frame)
    return closing_data(closing)


def _receive(websocket: Any, handle: Any) -> dict[str, Any] | None:
    from klee.wire.websocket import ConnectionClosed

    try:
        first = websocket.recv()
        if not (isinstance(first, str) and '"starting"' in first):
            handle(first)
        while True:
            handle(websocket.recv())
    except ConnectionClosed as exc:
        return closing_reason(exc)




def _print_text(session: Session, frame: str | bytes) -> None:
    if isinstance(frame, str):
        session.out.stream.write(frame if frame.endswith("\n") else frame + "\n")
        session.out.stream.flush()
