"""`klee system ...`: the daemon as a whole.

| command                        | request                  |
|--------------------------------|--------------------------|
| info [--output json]           | GET /system/info         |
| df [-v] [--output json]        | GET /system/df           |
| prune [-a] [--volumes] [-f]    | POST /system/prune       |
"""

from __future__ import annotations

from typing import Any

import click

from klee.commands.common import confirm
from klee.commands.stats import decimal_size
from klee.errors import KleeError
from klee.printing import Column
from klee.session import Session, pass_session

OUTPUT = click.option("--output", "--format", "output", type=click.Choice(("table", "json")), default="table",
                      show_default=True, help="Print text, or the daemon's JSON object.")


@click.group(name="system")
def system() -> None:
    """Manage kleened"""


def _object(reply: Any) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise KleeError("Error! Unexpected response received from Kleened.")
    return reply


@system.command(name="info", short_help="Show kleened's versions, drivers, host and object counts")
@OUTPUT
@pass_session
def info(session: Session, output: str) -> None:
    """Show kleened's version, backend and storage driver, the host's kernel and cgroup mode, the object counts,
    the state root and the listeners."""
    data = _object(session.client.get("/system/info"))
    if output == "json":
        session.out.json(data)
        return
    listeners = ", ".join(f"{item.get('kind')}:{item.get('address')}{' (tls)' if item.get('tls') else ''}"
                          for item in data.get("listeners") or [])
    rows = [
        ("Server Version", data.get("version")), ("API Version", data.get("api_version")),
        ("Backend", f"{data.get('backend')} {data.get('runtime_version')}"),
        ("Storage Driver", data.get("storage_driver")), ("Operating System", data.get("os")),
        ("Kernel Version", data.get("kernel")), ("Cgroup Version", data.get("cgroup_mode")),
        ("Containers", data.get("containers")), (" Running", data.get("containers_running")),
        (" Stopped", data.get("containers_stopped")), ("Images", data.get("images")),
        ("Volumes", data.get("volumes")), ("Networks", data.get("networks")),
        ("State Root", data.get("state_root")), ("Listeners", listeners),
    ]
    session.out.lines(f"{label}: {value}" for label, value in rows)


DF_COLUMNS = (Column("TYPE"), Column("TOTAL"), Column("ACTIVE"), Column("SIZE"), Column("RECLAIMABLE"))


@system.command(name="df", short_help="Show disk usage")
@click.option("--verbose", "-v", is_flag=True, default=False, help="Show every image, container and volume.")
@OUTPUT
@pass_session
def df(session: Session, verbose: bool, output: str) -> None:
    """Show the disk space images, containers, volumes and the build cache take (file content, each layer once)."""
    data = _object(session.client.get("/system/df"))
    if output == "json":
        session.out.json(data)
        return
    images, containers, volumes = (data.get(k) or [] for k in ("images", "containers", "volumes"))
    rows = [
        ["Images", str(len(images)), str(sum(1 for i in images if i.get("containers"))),
         decimal_size(data.get("layers_size") or 0), decimal_size(data.get("reclaimable_images") or 0)],
        ["Containers", str(len(containers)), str(sum(1 for c in containers if c.get("running"))),
         decimal_size(sum(c.get("size") or 0 for c in containers)),
         decimal_size(data.get("reclaimable_containers") or 0)],
        ["Local Volumes", str(len(volumes)), str(sum(1 for v in volumes if v.get("containers"))),
         decimal_size(sum(v.get("size") or 0 for v in volumes)), decimal_size(data.get("reclaimable_volumes") or 0)],
        ["Build Cache", "", "", decimal_size(data.get("build_cache_size") or 0), ""],
    ]
    session.out.table(DF_COLUMNS, rows)
    if not verbose:
        return
    session.out.line()
    session.out.table((Column("IMAGE ID"), Column("REPOSITORY"), Column("TAG"), Column("SIZE"),
                       Column("UNIQUE SIZE"), Column("CONTAINERS")),
                      [[i.get("id", ""), i.get("name", ""), i.get("tag", ""), decimal_size(i.get("size") or 0),
                        decimal_size(i.get("unique_size") or 0), str(i.get("containers", 0))] for i in images])
    session.out.line()
    session.out.table((Column("CONTAINER ID"), Column("NAME"), Column("IMAGE ID"), Column("SIZE"), Column("RUNNING")),
                      [[c.get("id", ""), c.get("name", ""), c.get("image_id", ""), decimal_size(c.get("size") or 0),
                        "yes" if c.get("running") else "no"] for c in containers])
    session.out.line()
    session.out.table((Column("VOLUME NAME"), Column("CONTAINERS"), Column("SIZE")),
                      [[v.get("name", ""), str(v.get("containers", 0)), decimal_size(v.get("size") or 0)]
                       for v in volumes])


@system.command(name="prune", short_help="Remove unused data")
@click.option("--all", "-a", "all_", is_flag=True, default=False, help="Remove every unused image, not only untagged.")
@click.option("--volumes", is_flag=True, default=False, help="Remove the volumes no container uses too.")
@click.option("--force", "-f", is_flag=True, default=False, help="Do not prompt for confirmation")
@pass_session
def prune(session: Session, all_: bool, volumes: bool, force: bool) -> None:
    """Remove stopped containers, networks without containers, untagged images (every unused one with --all) and,
    with --volumes, volumes no container uses."""
    what = ["all stopped containers", "all networks not used by at least one container",
            "all images without at least one container associated to them" if all_ else "all dangling images"]
    if volumes:
        what.append("all volumes not used by at least one container")
    confirm(f"WARNING! This will remove {', '.join(what)}.", force)
    data = _object(session.client.post("/system/prune", body={"all": all_, "volumes": volumes}))
    for key, title in (("containers", "Deleted Containers"), ("networks", "Deleted Networks"),
                       ("images", "Deleted Images"), ("volumes", "Deleted Volumes")):
        removed = data.get(key) or []
        if removed:
            session.out.line(f"{title}:")
            session.out.lines(str(item) for item in removed)
            session.out.line()
    session.out.line(f"Total reclaimed space: {decimal_size(data.get('space_reclaimed') or 0)}")
