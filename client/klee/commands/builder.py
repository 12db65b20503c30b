"""`klee builder ...`: the builder's own state (extension; upstream klee has no such group).

| command          | request            |
|------------------|--------------------|
| prune [-f]       | POST /build/prune  |

`prune` removes the RUN cache mounts (`RUN --mount=type=cache`) no build is using, and prints each cache id
and the space reclaimed. The layer cache needs no pruning: its layers belong to images (`klee image prune`).
"""

from __future__ import annotations

import click

from klee.commands.common import confirm
from klee.errors import KleeError
from klee.session import Session, pass_session


@click.group(name="builder")
def builder() -> None:
    """Manage the image builder's caches"""


@builder.command(name="prune")
@click.option("--force", "-f", is_flag=True, default=False, help="Do not prompt for confirmation")
@pass_session
def prune(session: Session, force: bool) -> None:
    """Remove the RUN cache mounts (RUN --mount=type=cache) that no build is using"""
    confirm("WARNING! This will remove every RUN cache mount no build is using.", force)
    reply = session.client.post("/build/prune")
    if not isinstance(reply, dict) or not isinstance(reply.get("cache_mounts"), list):
        raise KleeError("Error! Unexpected response received from Kleened.")
    session.out.lines(f"Deleted: {cache_id}" for cache_id in reply["cache_mounts"])
    session.out.line(f"Total reclaimed space: {_size(int(reply.get('bytes_reclaimed') or 0))}")


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1000  # type: ignore[assignment]
    return f"{count}B"
