"""Creating base images (`GET /images/create`): an image of one layer filled from outside.

Methods (`ImageCreateConfig.method`):
- `fetch`: a tar archive (gzip, xz, zstd or plain) from an http, https or file URL, extracted
  by the platform's safe extractor;
- `dir` (our extension): a directory on the daemon's host (`ImageCreateConfig.path`) copied in;
- `fetch-auto`: the host's own system (upstream: FreeBSD base.txz for `uname -r`; Linux:
  debootstrap of the host's distribution), autotagged `<system>:latest`;
- `zfs-copy`, `zfs-clone`: need the ZFS storage driver; on any other driver they fail with a
  message that says so.
Options: `dns` copies the host's /etc/resolv.conf in, `localtime` the host's /etc/localtime.
`update` runs freebsd-update (`RootfsSource.update`); where the host has none it is reported and skipped.

Created images have `user "root"`, `env []`, `instructions []`, one layer, and the command
`["/bin/sh"]`. Upstream's default is `["/bin/sh", "/etc/rc"]`, which boots a FreeBSD jail's rc
system; a Linux rootfs has no /etc/rc and the runtime's init (tini) already reaps and forwards
signals, so a plain shell is the useful default (as docker's base images have).

Whatever fails, or a cancellation (the client disconnected), removes the partial layer before
the error propagates: nothing is left behind. The image record is written last, in one store
write, so a half-made image is never visible.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import trio

from kleene_protocol.ids import new_id
from kleene_protocol.models import ImageCreateConfig
from kleene_protocol.names import image_name_error, shown
from kleene_protocol.refs import InvalidReference, split_nametag

from .. import faults
from ..platform.base import Capability, Count, Emit, HostCommandError, LayerStorage, RootfsSource
from .clock import now_iso
from .records import ImageRecord

log = logging.getLogger(__name__)

DEFAULT_CMD = ["/bin/sh"]
DEFAULT_USER = "root"
_CLEANUP_TIMEOUT = 120.0  # seconds to delete a partial layer; a big rootfs takes a few


class CreationFailed(Exception):
    """Image creation failed for `reason` (sent to the client as is); nothing was left behind."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_HOST_FAILURES = (ValueError, OSError, HostCommandError)


async def create_image(
    config: ImageCreateConfig,
    *,
    storage: LayerStorage,
    source: RootfsSource,
    add: Callable[[ImageRecord], None],
    emit: Emit,
) -> ImageRecord:
    """Create a base image by `config`, streaming progress text through `emit`.

    `add` stores the finished record (`Images.add`: it takes the name:tag from any older
    holder). Raises `CreationFailed`; cancellation propagates after the cleanup.
    """
    name, tag = _check(config, storage)
    layer_id, layer = await storage.create_layer()
    try:
        try:
            detected = await _fill(config, layer, source, emit)
            await _host_files(config, layer, source, emit)
            faults.point("image.create.filled")
            await storage.seal_layer(layer_id)
        except _HOST_FAILURES as exc:
            raise CreationFailed(failure_reason(exc)) from exc
        if detected is not None and config.autotag:
            name, tag = detected[0], "latest"
        record = ImageRecord(
            id=new_id(), name=name, tag=tag, cmd=list(DEFAULT_CMD), env=[], user=DEFAULT_USER, instructions=[],
            created=now_iso(), dataset=str(layer), layers=[layer_id],
        )
        add(record)
    except BaseException:
        await discard_layer(storage, layer_id)
        raise
    if detected is not None:
        await emit(f"Created image from the automatically detected version: {detected[0]} {detected[1]}.\n")
    log.info("image created", extra={"image": record.id, "method": config.method, "layer": layer_id})
    return record


def _check(config: ImageCreateConfig, storage: LayerStorage) -> tuple[str, str]:
    """Refuse what cannot work before any layer exists; return the (name, tag) to give."""
    if config.method in ("zfs-copy", "zfs-clone") and Capability.SEND not in storage.capabilities:
        raise CreationFailed(f"{config.method} needs the ZFS storage driver (this daemon uses {storage.driver})")
    if config.method == "fetch":
        scheme = urllib.parse.urlsplit(config.url).scheme
        if not config.url:
            raise CreationFailed("could not fetch file from url: no url given")
        if scheme not in ("http", "https", "file"):
            raise CreationFailed(f"could not fetch file from url: unsupported scheme '{scheme}' (http, https, file)")
    if config.method == "dir" and not config.path.startswith("/"):
        raise CreationFailed(f"method 'dir' needs 'path', an absolute host directory, not '{config.path}'")
    try:
        name, tag = split_nametag(config.tag)
    except InvalidReference as exc:
        raise CreationFailed(str(exc)) from None
    if "@" in config.tag:
        raise CreationFailed(f"invalid name and tag '{shown(config.tag)}': '@' is reserved for snapshots")
    if error := image_name_error(name, tag):
        raise CreationFailed(error)
    return name, tag


async def _fill(config: ImageCreateConfig, layer: Path, source: RootfsSource, emit: Emit) -> tuple[str, str] | None:
    """Put the base system into `layer`; for fetch-auto return what was detected (name, arch)."""

    def counter(verb: str) -> Count:
        async def on_count(count: int) -> None:
            await emit(f"{verb} {count} files...\n")

        return on_count

    if config.method == "fetch":
        async with source.fetched(config.url, emit) as archive:
            await emit("Succesfully fetched base system.\n")  # upstream's spelling, kept for klee users
            await emit("Unpacking contents and creating image...\n")
            await source.extract(archive, layer, counter("Extracted"))
        await emit("Succesfully extracted binaries, creating image...\n")
        return None
    if config.method == "dir":
        await emit(f"Copying {config.path} into the new image...\n")
        await source.copy_dir(config.path, layer, counter("Copied"))
        await emit("Succesfully copied files, creating image...\n")
        return None
    return await source.bootstrap(layer, emit)  # fetch-auto


async def _host_files(config: ImageCreateConfig, layer: Path, source: RootfsSource, emit: Emit) -> None:
    wanted = [("/etc/resolv.conf", config.dns), ("/etc/localtime", config.localtime)]
    for host_path, enabled in wanted:
        if enabled and not await source.add_host_file(host_path, layer, host_path):
            await emit(f"{host_path} not found on host, skipping...\n")
    if config.update:
        try:
            await source.update(layer, emit)
        except NotImplementedError as exc:
            await emit(f"{exc}: skipping...\n")


def failure_reason(exc: BaseException) -> str:
    """A host failure as one line for the client."""
    if isinstance(exc, HostCommandError):
        return f"{exc.argv[0]} exited with {exc.returncode}: {exc.stderr}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


async def discard_layer(storage: LayerStorage, layer_id: str) -> None:
    """Remove the partial layer, shielded from the cancellation that may have caused this."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(_CLEANUP_TIMEOUT) as scope:
            try:
                await storage.remove_layer(layer_id)
            except Exception:
                log.warning("could not remove the partial layer %s: it leaked",
                            layer_id, exc_info=True)
                return
        if scope.cancelled_caught:
            log.warning("removing the partial layer %s timed out: it leaked", layer_id)
