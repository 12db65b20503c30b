"""`SimHost`: one simulated FreeBSD host in a directory, its stand-in executables in `bin/`.

The fixture (conftest.py) puts `bin/` first on PATH and hands the drivers a `Commands` that
resolves tool names there. Tests read the host's state through the accessors below rather than
through the drivers under test, and `leaks()` lists what a test left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import mounts, net, zfs
from .misc import SYSCTL_DEFAULTS
from .state import State, linux_tool, mounted_nodes, processes_under
from .tool import TOOLS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """#!{python} -S
# SIMULATION: a stand-in for FreeBSD's `{tool}` (tests/freebsd_sim), not the real tool.
import sys
sys.dont_write_bytecode, sys.pycache_prefix = False, {pycache!r}  # compiled once per test session
sys.path.insert(0, {repo!r})
from tests.freebsd_sim.tool import main
sys.exit(main({tool!r}, sys.argv[1:], {state!r}))
"""


class SimHost:
    def __init__(self, root: Path, *, pycache: Path, pool: str = "zroot") -> None:
        self.root = root
        self.bin = root / "bin"
        self.state = State(root / "state")
        self.pool = pool
        self.bin.mkdir(parents=True)
        self.state.root.mkdir()
        for tool in TOOLS:
            path = self.bin / tool
            path.write_text(SCRIPT.format(python=sys.executable, tool=tool, repo=str(REPO), pycache=str(pycache),
                                          state=str(self.state.root)))
            path.chmod(0o755)
        self.state.save("net", net.initial())
        self.state.save("sysctl", dict(SYSCTL_DEFAULTS))
        zfs.create_pool(self.state, pool)

    # --- running the stand-ins directly (for assertions) ---------------------------------------------

    def run(self, tool: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / tool), *args], input=input, capture_output=True, check=False)

    def ok(self, tool: str, *args: str, input: bytes | None = None) -> str:
        done = self.run(tool, *args, input=input)
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stderr.decode()}"
        return done.stdout.decode()

    # --- state ---------------------------------------------------------------------------------------

    def datasets(self) -> list[str]:
        return sorted(zfs.load(self.state)["datasets"])

    def snapshots(self) -> list[str]:
        return list(zfs.load(self.state)["snapshots"])

    def mountpoint(self, dataset: str) -> Path:
        return Path(zfs.mountpoint(self.state, zfs.load(self.state), dataset))

    def jails(self) -> dict[str, dict]:
        return self.state.load("jails", {"jails": {}})["jails"]

    def interfaces(self, context: str = "") -> dict[str, dict]:
        return {i["name"]: i for i in self.state.load("net", net.initial())["ifaces"] if i["ctx"] == context}

    def routes(self, context: str = "") -> dict[str, str]:
        return self.state.load("net", net.initial())["routes"].get(context, {})

    def pf(self) -> dict:
        return self.state.load("pf", {"enabled": False, "main": [], "anchors": {}})

    def sysctl(self, key: str) -> str:
        return self.state.load("sysctl", SYSCTL_DEFAULTS)[key]

    def set_sysctl(self, key: str, value: str) -> None:
        values = self.state.load("sysctl", dict(SYSCTL_DEFAULTS))
        values[key] = value
        self.state.save("sysctl", values)

    def rctl(self) -> list[str]:
        return self.state.load("rctl", [])

    def mounts(self) -> list[str]:
        """Real mounts below the simulated host's directory."""
        top = str(self.root.resolve())
        return [n for n in mounted_nodes() if n.startswith(top + "/")]

    def processes(self) -> dict[str, list[int]]:
        return {name: pids for name, info in self.jails().items() if (pids := processes_under(info["path"]))}

    # --- end of a test --------------------------------------------------------------------------------

    def leaks(self) -> list[str]:
        found = [f"jail {name}" for name in self.jails()]
        found += [f"mount {node}" for node in self.mounts()]
        found += [f"interface {name}" for name, i in self.interfaces().items() if i["cloned"]]
        return found

    def cleanup(self) -> None:
        """Kill what runs in the simulated jails and unmount what the simulation mounted."""
        for info in self.jails().values():
            for pid in processes_under(info["path"]):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while processes_under(info["path"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        mounts.cleanup(self.state)
        for node in sorted(self.mounts(), key=lambda n: n.count("/"), reverse=True):
            subprocess.run([linux_tool("umount"), "-l", node], check=False)
