"""`klee image build PATH` (shortcut `klee build`): build an image from a Dockerfile over `/images/build`.

Upstream klee's flags and output, plus:
- `--no-cache`: this klee asks for the build cache by default (`"cache": true`, an extension field; upstream klee
  never sends it, so its builds behave as upstream's);
- `--pull/--no-pull`: a FROM image that is not local is pulled from its registry (`"pull": true`, with the
  credentials of `klee login`); the pull's lines come before the starting message;
- `--target`, `--platform` (the daemon's own only), `--label` (repeatable), `--secret id=ID,src=FILE` or
  `id=ID,env=VAR` (repeatable; read here, sent in the config frame, never written anywhere): Docker's flags, sent
  as the extension fields `target`, `platform`, `labels` and `secrets` only when given;
- `--upload/--no-upload`: send the context as a tar stream (`"context_upload": true`) instead of its path. The
  default is to upload when the host is not a unix socket, since the daemon then cannot be assumed to see PATH.
  The tar honours PATH/.dockerignore (the Dockerfile and .dockerignore always go), so ignored files never leave this
  machine; kleened applies the same rules again (klee imports nothing of the daemon, so it has its own matcher).

Output: `Started to build image with ID <id>`, the daemon's `Step`, snapshot, cache and parent-image lines in bold
(fancy theme), process output as it comes, then `image created` and the id. A failed build exits 1 with
`Failed to build image <id>. Most recent snapshot is @<snap>` (or why there is none) on stderr.

This module also gives the `image` group its `build` command; `klee.cli` loads the group from here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from klee.commands.image import image
from klee.connection import parse_host
from klee.errors import KleeError, UsageError
from klee.session import Session, pass_session
from klee.specs import NETWORK_DRIVERS, check_choice, parse_mount
from klee.streams import closing_reason

if TYPE_CHECKING:
    from klee.printing import Output
    from kleene_protocol.dockerignore import DockerIgnore

__all__ = ["build", "image"]

CHUNK = 256 * 1024  # bytes per uploaded frame: far below kleened's 1 MiB frame limit
STATUS_PREFIXES = ("--> ", "Using user-supplied parent image:")  # snapshots, cache hits, triggers, notes
EXIT_BUILD_FAILED = 1  # upstream klee's


@image.command(name="build", no_args_is_help=True, short_help="Build a new image")
@click.option("--from", "from_", default=None, help="An image that replaces the one in the Dockerfile's FROM.")
@click.option("--file", "-f", default="Dockerfile", show_default=True, help="The Dockerfile, relative to PATH.")
@click.option("--tag", "-t", default="", help="Name and optionally a tag in the 'name:tag' format")
@click.option("--quiet", "-q", is_flag=True, default=False, help="Suppress the build output and print the image ID.")
@click.option("--rm", "cleanup", is_flag=True, default=False, help="Remove the image if the build fails.")
@click.option("--build-arg", multiple=True, metavar="list", help="Set build-time variables: `--build-arg A=1`.")
@click.option("--no-cache", is_flag=True, default=False, help="Run every step, reusing nothing from earlier builds.")
@click.option("--pull/--no-pull", default=True, show_default=True,
              help="Pull a FROM image that is not local from its registry.")
@click.option("--target", default="", help="The build stage to build (default: the last one).")
@click.option("--platform", default="", help="The platform to build for: only the daemon's own is accepted.")
@click.option("--label", multiple=True, metavar="list", help="Set a label on the image: `--label a=1`.")
@click.option("--secret", multiple=True, metavar="list",
              help="A secret for RUN --mount=type=secret: `id=ID,src=FILE` or `id=ID,env=VARIABLE`.")
@click.option("--upload/--no-upload", default=None,
              help="Send the context to kleened instead of its path (default: when the host is not a unix socket).")
@click.option("--user", "-u", default="", help="Default user of the build container's processes.")
@click.option("--env", "-e", multiple=True, metavar="list", help="Environment of the build container: `-e A=1`.")
@click.option("--mount", "-m", multiple=True, metavar="list", help="Mount into the build container: SOURCE:DEST[:ro].")
@click.option("--jailparam", "-J", multiple=True, metavar="list", help="Jail parameters of the build container.")
@click.option("--driver", "-l", default=None, help="Network driver of the build container (default host, or ipnet "
              "with --network).")
@click.option("--network", "-n", default=None, help="Connect the build container to a network.")
@click.option("--ip", default=None, help="IPv4 address on `network` (default: allocate one).")
@click.option("--ip6", default=None, help="IPv6 address on `network` (default: allocate one).")
@click.argument("path")
@pass_session
def build(session: Session, path: str, upload: bool | None, **options: Any) -> None:
    """Build a new image from a context and Dockerfile located in PATH.

    The container options configure the build container; USER and ENV instructions override `--user` and `--env`.
    """
    context = Path(path).absolute()
    if upload is None:
        upload = not parse_host(session.settings.host).is_unix
    config = build_config(str(context), upload=upload, **options)
    archive = context_archive(context, options["file"]) if upload else None
    stream_build(session, config, archive)


def build_config(context: str, *, upload: bool, **options: Any) -> dict[str, Any]:
    """The `ImageBuildConfig` frame: upstream klee's keys, plus `cache` and `context_upload`."""
    buildargs = _pairs(options["build_arg"], "build-arg")
    driver = options["driver"] or ("ipnet" if options["network"] else "host")
    check_choice(driver, NETWORK_DRIVERS, "network driver")
    networks = []
    if options["network"]:
        networks.append({"container": "", "network": options["network"], "ip_address": options["ip"] or "<auto>",
                         "ip_address6": options["ip6"] or "<auto>"})
    config: dict[str, Any] = {
        "context": context,
        "dockerfile": options["file"],
        "tag": options["tag"],
        "quiet": options["quiet"],
        "cleanup": options["cleanup"],
        "buildargs": buildargs,
        "container_config": {
            "name": None, "cmd": None, "image": options["from_"], "user": options["user"], "env": list(options["env"]),
            "mounts": [parse_mount(m) for m in options["mount"]], "jail_param": list(options["jailparam"]),
            "network_driver": driver,
        },
        "networks": networks,
        "cache": not options["no_cache"],
        "context_upload": upload,
        "pull": options.get("pull", False),
        "credentials": _credentials() if options.get("pull", False) else {},
    }
    extensions = {"target": options.get("target") or "", "platform": options.get("platform") or "",
                  "labels": _pairs(options.get("label") or (), "label"),
                  "secrets": dict(parse_secret(s) for s in options.get("secret") or ())}
    config.update({key: value for key, value in extensions.items() if value})  # upstream's frame unless asked
    return config


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"invalid {what} '{item}': expected KEY=value")
        pairs[name] = value
    return pairs


def parse_secret(spec: str) -> tuple[str, str]:
    """`id=ID,src=FILE` (also `source=`, `type=file`) or `id=ID,env=VAR` (`type=env`; without src and env, the
    variable named ID): (id, the content in base64, as the config frame carries bytes)."""
    fields = _pairs(tuple(f for f in spec.split(",") if f), "secret")
    secret_id = fields.get("id", "")
    if not secret_id:
        raise UsageError(f"invalid secret '{spec}': id= is required")
    src = fields.get("src") or fields.get("source")
    env = fields.get("env") or (secret_id if not src and fields.get("type", "env") == "env" else None)
    if src:
        try:
            data = Path(src).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"secret '{secret_id}': cannot read {src}: {exc.strerror}") from None
    elif env is not None and env in os.environ:
        data = os.environ[env].encode()
    else:
        raise UsageError(f"secret '{secret_id}': give src=FILE, or env=VARIABLE with the variable set")
    return secret_id, base64.b64encode(data).decode()


def _credentials() -> dict[str, dict[str, str]]:
    from klee.commands.oci import credentials

    return credentials()


# --- the context as a tar stream ---------------------------------------------------------------------------------


class _Chunks(io.RawIOBase):
    """A write-only file that collects what tarfile writes, for the generator to hand out in frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)

    def take(self, at_least: int) -> Iterator[bytes]:
        while len(self.buffer) >= max(at_least, 1):
            chunk = bytes(self.buffer[:CHUNK])
            del self.buffer[:CHUNK]
            yield chunk


def context_archive(context: Path, dockerfile: str) -> Iterator[bytes]:
    """The context as a gzip tar, in chunks, built while it is sent. Raises `UsageError` before the first chunk
    when the context cannot be sent."""
    if not context.is_dir():
        raise UsageError(f"unable to prepare context: path '{context}' is not a directory")
    docker_path = (context / dockerfile).resolve()
    if not docker_path.is_relative_to(context.resolve()):
        raise UsageError(f"with an uploaded context the Dockerfile must be inside '{context}' (got '{dockerfile}')")
    keep = {".dockerignore", docker_path.relative_to(context.resolve()).as_posix()}
    return _archive_chunks(context, _ignore_rules(context), keep)


def _archive_chunks(context: Path, ignore: DockerIgnore | None, keep: set[str]) -> Iterator[bytes]:
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in _context_entries(context, ignore, keep):
            tar.add(context / rel, arcname=rel, recursive=False)
            yield from sink.take(CHUNK)
    yield from sink.take(1)


def _context_entries(context: Path, ignore: DockerIgnore | None, keep: set[str]) -> Iterator[str]:
    """Relative paths to send, parents first, skipping what .dockerignore excludes."""
    pending = [""]
    while pending:
        sub = pending.pop()
        with os.scandir(context / sub) as listing:
            entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
        for name, is_dir in entries:
            rel = f"{sub}/{name}" if sub else name
            ignored = ignore is not None and rel not in keep and ignore.is_ignored(rel)
            if not ignored:
                yield rel
            if is_dir and (not ignored or ignore.should_descend(rel)):
                pending.append(rel)


def _ignore_rules(context: Path) -> DockerIgnore | None:
    """The context's .dockerignore, with the same matcher kleened uses (it filters again anyway)."""
    from kleene_protocol.dockerignore import parse

    try:
        text = (context / ".dockerignore").read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return parse(text)


def stream_build(session: Session, config: dict[str, Any], archive: Iterator[bytes] | None) -> str:
    """Run the build; print its log; return the image id. Raises `KleeError` (exit 1) when the build fails.

    With `quiet` only the image id is printed, so that `IMG=$(klee build -q .)` works.
    """
    from klee.wire.websocket import ConnectionClosed

    out = session.out
    quiet = bool(config.get("quiet"))
    printer = _Printer(out, quiet=quiet)
    with session.client.stream("/images/build") as websocket:
        websocket.send(json.dumps(config))
        if archive is not None:
            for chunk in archive:
                websocket.send(chunk)  # bytes: BINARY frames
            websocket.send(b"")  # the end of the context
        image_id = ""
        try:
            first = json.loads(_after_pull_lines(websocket, printer))
            if first.get("msg_type") == "error":
                raise KleeError(str(first.get("message") or "kleened reported an error"), EXIT_BUILD_FAILED)
            image_id = str(first.get("data") or "")
            if image_id:
                printer.status(f"Started to build image with ID {image_id}")
            while True:
                printer.frame(websocket.recv())
        except ConnectionClosed as exc:
            closing = closing_reason(exc)
        except ValueError:
            raise KleeError("Error! Unexpected response received from Kleened.") from None
    printer.end()
    if closing is None:
        raise KleeError("ERROR! Connection closed unexpectedly.")
    message, data = str(closing.get("message", "")), str(closing.get("data", ""))
    if closing.get("msg_type") == "error":
        raise KleeError(_failure(image_id, message, data), EXIT_BUILD_FAILED)
    if quiet:
        out.line(data)
        return data
    printer.status(message)
    if data:
        printer.status(data)
    return data


def _after_pull_lines(websocket: Any, printer: _Printer) -> str | bytes:
    """The first frame that is not a line about pulling a FROM image (sent before the starting message)."""
    while True:
        frame = websocket.recv()
        if not isinstance(frame, str) or frame.startswith("{"):
            return frame
        printer.frame(frame)




def _failure(image_id: str, message: str, data: str) -> str:
    if message != "image build failed":
        return f"{message}: {data}" if data else message
    if data.startswith("@"):
        return f"Failed to build image {image_id}. Most recent snapshot is {data}"
    if data:
        return f"Failed to build image {image_id} ({data})"
    return f"Failed to build image {image_id}"


class _Printer:
    """Status lines on lines of their own (bold in the fancy theme), process output as it comes."""

    def __init__(self, out: Output, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.at_line_start = True

    def frame(self, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else frame.decode(errors="replace")
        if text.startswith(STATUS_PREFIXES) or (text.startswith("Step ") and " : " in text):
            self.status(text)
        else:
            self._write(text)

    def status(self, text: str) -> None:
        if not self.at_line_start:
            self._write("\n")
        text = text.removesuffix("\n")  # notes end in a newline for upstream klee, which prints them as output
        self._write(f"\x1b[1m{text}\x1b[0m\n" if self.out.fancy else f"{text}\n")

    def end(self) -> None:
        self._write("\n")

    def _write(self, text: str) -> None:
        if text and not self.quiet:
            self.out.stream.write(text)
            self.out.stream.flush()
            self.at_line_start = text.endswith("\n")
