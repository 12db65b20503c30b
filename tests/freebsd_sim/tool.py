"""Entry point of every stand-in executable: `main(tool, argv, state_dir)` -> exit status.

Only the module of the tool that runs is imported: every command of a test pays this start-up.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .state import Refused, State, err

TOOLS = {
    "jail": "jails:jail", "jexec": "jails:jexec", "jls": "jails:jls", "ps": "jails:ps",
    "zfs": "zfs:main", "ifconfig": "net:ifconfig", "route": "net:route", "pfctl": "pfctl:main",
    "mount": "mounts:mount", "mount_nullfs": "mounts:mount_nullfs", "umount": "mounts:umount",
    "sysctl": "misc:sysctl", "rctl": "misc:rctl", "freebsd-update": "misc:freebsd_update",
}


def main(tool: str, argv: list[str], state_dir: str) -> int:
    module, _, function = TOOLS[tool].partition(":")
    run = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    state = State(Path(state_dir))
    try:
        with state.locked():
            return run(state, argv) or 0
    except Refused as exc:
        err(exc.message)
        return exc.code
