"""`klee image ...`: images are found by id, id prefix or `name[:tag]` (the tag defaults to latest).

| command                          | request                                          |
|----------------------------------|--------------------------------------------------|
| create [OPTIONS] METHOD [SOURCE] | WS /images/create, config frame ImageCreateConfig |
| ls [-q] [--output table|json]    | GET /images/list                                 |
| inspect IMAGE                    | GET /images/{ident}/inspect                      |
| rm IMAGE...                      | DELETE /images/{ident}, in order                 |
| prune [-a] [-f]                  | POST /images/prune?all=true|false                |
| tag IMAGE NAMETAG                | POST /images/{ident}/tag?nametag=NAMETAG         |
"""

from __future__ import annotations

from typing import Any

import click

from klee.commands.common import confirm, inspect_command, listing_options, print_listing, reply_id, reply_list
from klee.completion import complete_images
from klee.connection import api_path, query_bool
from klee.errors import UsageError
from klee.printing import Column, ago
from klee.session import Session, pass_session

COLUMNS = (
    Column("ID", style="cyan"),
    Column("NAME", style="bold aquamarine1"),
    Column("TAG", style="aquamarine1"),
    Column("CREATED", style="bright_white"),
)
METHODS = ("fetch-auto", "fetch", "zfs-copy", "zfs-clone", "dir")
SOURCE_FIELD = {"fetch": "url", "zfs-copy": "zfs_dataset", "zfs-clone": "zfs_dataset", "dir": "path"}


@click.group(name="image")
def image() -> None:
    """Manage images"""


@image.command(name="create", no_args_is_help=True, short_help="Create a new base image")
@click.option("--tag", "-t", default="", help="Name and optionally a tag in the 'name:tag' format")
@click.option(
    "--dns/--no-dns",
    default=True,
    show_default=True,
    help="Whether or not to copy /etc/resolv.conf from the host to the new image.",
)
@click.option(
    "--localtime/--no-localtime",
    default=True,
    show_default=True,
    help="Whether or not to copy /etc/localtime from the host to the new image, if it exists.",
)
@click.option(
    "--update/--no-update",
    default=False,
    show_default=True,
    help="Update the userland of the new image (freebsd-update(8) on FreeBSD).",
)
@click.option(
    "--autotag/--no-autotag",
    "-a",
    default=True,
    show_default=True,
    help="Name the image after the host's system, '<system>-<version>:latest' (e.g. 'FreeBSD-14.2-RELEASE' on "
    "FreeBSD, 'debian-12' on Debian). Ignored when `tag` is set. fetch-auto only.",
)
@click.argument("method", type=click.Choice(METHODS))
@click.argument("source", nargs=-1)
@pass_session
def create(
    session: Session,
    tag: str,
    dns: bool,
    localtime: bool,
    update: bool,
    autotag: bool,
    method: str,
    source: tuple[str, ...],
) -> None:
    """Create a base image with METHOD:

    \b
    fetch-auto  fetch the host's release from the official mirrors (no SOURCE)
    fetch       SOURCE is a URL of a base system tar archive
    zfs-copy    SOURCE is a ZFS dataset to copy
    zfs-clone   SOURCE is a ZFS dataset to clone
    dir         SOURCE is a directory on the daemon's host to copy
    """
    from klee.streams import create_image

    field = SOURCE_FIELD.get(method)
    if field is not None and not source:
        raise UsageError(f"The SOURCE argument is needed when creating images using the '{method}' method.")
    extra = source[1:] if field is not None else source
    if extra:
        raise UsageError(f"too many arguments: {' '.join(extra)}")
    config = {
        "method": method,
        "url": "",
        "zfs_dataset": "",
        "tag": tag,
        "dns": dns,
        "localtime": localtime,
        "update": update,
        "autotag": autotag and tag == "",
    }
    if field is not None:
        config[field] = source[0]
    create_image(session.client, session.out, config)


@image.command(name="ls")
@listing_options("image ids")
@pass_session
def listing(session: Session, output: str, quiet: bool) -> None:
    """List images"""
    images = reply_list(session.client.get("/images/list"))
    print_listing(session, images, output=output, quiet=quiet, key="id", columns=COLUMNS, row=image_row)


def image_row(img: dict[str, Any]) -> list[str]:
    """One line of `image ls`."""
    return [str(img.get("id", "")), str(img.get("name", "")), str(img.get("tag", "")), ago(img.get("created"))]


@image.command(name="rm", no_args_is_help=True)
@click.argument("images", nargs=-1, required=True, shell_complete=complete_images)
@pass_session
def remove(session: Session, images: tuple[str, ...]) -> None:
    """Remove one or more images. Removal stops at the first image that cannot be removed."""
    for ident in images:
        session.out.line(reply_id(session.client.delete(api_path("/images/{}", ident))))


@image.command(name="prune")
@click.option("--all", "-a", "all_", is_flag=True, default=False, help="Remove tagged images as well.")
@click.option("--force", "-f", is_flag=True, default=False, help="Do not prompt for confirmation")
@pass_session
def prune(session: Session, all_: bool, force: bool) -> None:
    """Remove images that are not being used by containers or other images"""
    confirm("WARNING! This will remove all unused images.", force)
    removed = reply_list(session.client.post("/images/prune", params={"all": query_bool(all_)}))
    session.out.lines(str(item) for item in removed)


@image.command(name="tag", no_args_is_help=True, short_help="Rename an image")
@click.argument("source_image", shell_complete=complete_images)
@click.argument("nametag")
@pass_session
def tag(session: Session, source_image: str, nametag: str) -> None:
    """Set the name and tag of image SOURCE_IMAGE to NAMETAG ('name:tag'; the tag defaults to 'latest')."""
    reply = session.client.post(api_path("/images/{}/tag", source_image), params={"nametag": nametag})
    session.out.line(reply_id(reply))


image.add_command(
    inspect_command(
        "inspect", "image", "/images/{}/inspect", "Display detailed information on an image", complete_images
    )
)
