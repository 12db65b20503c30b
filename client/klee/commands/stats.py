"""`klee stats` and `klee top` (extensions, docker-like).

| command                                           | request                                   |
|---------------------------------------------------|-------------------------------------------|
| stats [CONTAINER...] [--no-stream] [--output json] | WS /containers/stats, StatsConfig        |
| top CONTAINER [--output json]                     | GET /containers/{ident}/top               |

stats prints a table per sample; on a terminal the table is redrawn in place. With
`--output json` it prints each sample's containers as one line of JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from klee.commands.common import OUTPUT_FORMATS
from klee.completion import complete_containers
from klee.connection import api_path
from klee.errors import KleeError
from klee.printing import Column, ago
from klee.session import Session, pass_session

STATS_COLUMNS = (
    Column("CONTAINER ID", style="cyan"),
    Column("NAME", style="bold aquamarine1"),
    Column("CPU %"),
    Column("MEM USAGE / LIMIT"),
    Column("MEM %"),
    Column("NET I/O"),
    Column("BLOCK I/O"),
    Column("PIDS"),
)
TOP_COLUMNS = (Column("USER"), Column("PID"), Column("PPID"), Column("STATE"), Column("RSS"), Column("TIME"),
               Column("STARTED"), Column("COMMAND", max_width=60))  # fmt: skip
_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def _size(n: float, step: int, units: tuple[str, ...], digits: str) -> str:
    for unit in units:
        if n < step or unit == units[-1]:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:{digits}}{unit}"
        n /= step
    return ""


def binary_size(n: float) -> str:
    """Memory as docker shows it: 1.50MiB."""
    return _size(n, 1024, ("B", "KiB", "MiB", "GiB", "TiB"), ".2f")


def decimal_size(n: float) -> str:
    """I/O as docker shows it: 1.2MB."""
    return _size(n, 1000, ("B", "kB", "MB", "GB", "TB"), ".3g")


def stats_row(c: dict[str, Any]) -> list[str]:
    limit = c.get("memory_limit")
    memory = c.get("memory") or 0
    net = "--" if c.get("net_rx") is None else f"{decimal_size(c['net_rx'])} / {decimal_size(c['net_tx'] or 0)}"
    return [
        str(c.get("id", "")), c.get("name") or "--", f"{c.get('cpu_percent', 0):.2f}%",
        f"{binary_size(memory)} / {binary_size(limit) if limit else '--'}",
        f"{memory / limit * 100:.2f}%" if limit else "--", net,
        f"{decimal_size(c.get('block_read') or 0)} / {decimal_size(c.get('block_write') or 0)}",
        str(c.get("pids", 0)),
    ]  # fmt: skip


@click.command(name="stats")
@click.option("--no-stream", is_flag=True, default=False, help="Print one sample and exit.")
@click.option("--interval", default=1.0, type=click.FloatRange(0.1, 60), show_default=True,
              help="Seconds between samples.")  # fmt: skip
@click.option("--output", "--format", "output", type=click.Choice(OUTPUT_FORMATS), default="table",
              help="Output format: a table, or one line of JSON per sample.")  # fmt: skip
@click.argument("containers", nargs=-1, shell_complete=complete_containers)
@pass_session
def stats(session: Session, no_stream: bool, interval: float, output: str, containers: tuple[str, ...]) -> None:
    """Show live resource usage of running containers (all of them when none is named)."""
    from klee.commands.streams import _finish, _open
    from klee.streams import _receive_until_closed

    out = session.out
    redraw = output == "table" and not no_stream and sys.stdout.isatty()

    def show(frame: str | bytes) -> None:
        sample = json.loads(frame)
        if output == "json":
            out.line(json.dumps(sample["containers"]))
            return
        if redraw:
            out.stream.write(_CLEAR)
        out.table(STATS_COLUMNS, [stats_row(c) for c in sample["containers"]])

    config = {"containers": list(containers), "interval": interval, "stream": not no_stream}
    with session.client.stream("/containers/stats") as websocket:
        _open(websocket, config)
        _finish(_receive_until_closed(websocket, show))


def _cpu_time(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@click.command(name="top", no_args_is_help=True)
@click.option("--output", "--format", "output", type=click.Choice(OUTPUT_FORMATS), default="table",
              help="Output format.")  # fmt: skip
@click.argument("container", shell_complete=complete_containers)
@pass_session
def top(session: Session, output: str, container: str) -> None:
    """List the processes of a running container."""
    reply = session.client.get(api_path("/containers/{}/top", container))
    if not isinstance(reply, dict) or not isinstance(reply.get("processes"), list):
        raise KleeError("Error! Unexpected response received from Kleened.")
    if output == "json":
        session.out.json(reply["processes"])
        return
    rows = [[p["user"], str(p["pid"]), str(p["ppid"]), p["state"], binary_size(p["rss"]), _cpu_time(p["cpu_time"]),
             ago(p["started"]), p["command"]] for p in reply["processes"]]  # fmt: skip
    session.out.table(TOP_COLUMNS, rows)
