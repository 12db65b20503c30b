"""Where a new base image's files come from on a Linux host: `LinuxRootfs` is the portable
`platform.posix.rootfs.HostRootfs` (downloads, tar archives, host directories) plus debootstrap
of the host's own distribution (`fetch-auto`), and mounts seen through /proc/self/mountinfo.

fetch-auto on Linux: upstream downloads the FreeBSD base.txz matching `uname -r`. Here the
equivalent "the system this host runs" is `debootstrap --variant=minbase <codename>` from the
mirror in the host's own apt sources, named `<ID>-<VERSION_ID>` from /etc/os-release
(`debian-12`). Only Debian-family hosts (with the `debootstrap` package) can do it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from kleened.platform.base import Emit
from kleened.platform.linux import mountinfo
from kleened.platform.posix import hostcmd
from kleened.platform.posix.rootfs import HostRootfs, RootfsError
from kleened.platform.posix.tar import Limits

log = logging.getLogger(__name__)

_LAST_LINES = 5  # debootstrap output kept for the failure message
_STOP_GRACE = 10.0  # seconds between TERM and KILL for a cancelled debootstrap


@dataclass(frozen=True)
class HostRelease:
    distro: str  # os-release ID, e.g. "debian"
    version: str  # VERSION_ID, or the codename when there is none (testing, sid)
    codename: str  # what debootstrap calls the suite, e.g. "bookworm"
    mirror: str  # an apt URI serving that suite

    @property
    def name(self) -> str:
        return f"{self.distro}-{self.version}"


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def apt_sources(etc_apt: Path) -> list[tuple[str, str]]:
    """(uri, suite) of every enabled `deb` source: one-line `.list` files and deb822 `.sources`."""
    found: list[tuple[str, str]] = []
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            found += _one_line_sources(path.read_text(errors="replace"))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        found += _deb822_sources(path.read_text(errors="replace"))
    return found


def _one_line_sources(text: str) -> list[tuple[str, str]]:
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            found.append((words[0], words[1]))
    return found


def _deb822_sources(text: str) -> list[tuple[str, str]]:
    found = []
    uncommented = "\n".join(line.rstrip() for line in text.splitlines() if not line.startswith("#"))
    for stanza in uncommented.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line[:1].isspace():
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        found += [(uri, suite) for uri in fields.get("uris", "").split() for suite in fields.get("suites", "").split()]
    return found


def host_release(etc: Path = Path("/etc")) -> HostRelease:
    try:
        info = parse_os_release((etc / "os-release").read_text())
    except OSError as exc:
        raise RootfsError(f"cannot detect the host system: {exc}") from None
    distro, codename = info.get("ID", ""), info.get("VERSION_CODENAME", "")
    if not distro or not codename:
        raise RootfsError("cannot detect the host system: /etc/os-release has no ID or VERSION_CODENAME")
    mirrors = [uri for uri, suite in apt_sources(etc / "apt") if suite == codename]
    if not mirrors:
        raise RootfsError(f"no apt source for '{codename}' in /etc/apt/sources.list(.d)")
    return HostRelease(distro=distro, version=info.get("VERSION_ID") or codename, codename=codename, mirror=mirrors[0])


class LinuxRootfs(HostRootfs):
    """`HostRootfs` on Linux; see the module docstring."""

    def __init__(self, workdir: Path, *, limits: Limits | None = None, debootstrap: str = "debootstrap",
                 etc: Path = Path("/etc")) -> None:
        super().__init__(workdir, limits=limits)
        self.debootstrap = debootstrap
        self.etc = etc

    def mounted_below(self, path: Path) -> bool:
        return bool(mountinfo.mounts_under(path))

    # --- fetch-auto ------------------------------------------------------------------------

    async def bootstrap(self, dest: Path, output: Emit) -> tuple[str, str]:
        """debootstrap the host's distribution into `dest`; return (name, architecture).

        debootstrap's output is relayed line by line. A failure or a cancellation stops it
        (TERM to its process group, KILL after a grace period) and unmounts whatever it had
        mounted inside `dest` (/proc, /sys) so the caller can delete the layer.
        """
        exe = shutil.which(self.debootstrap)
        if exe is None:
            raise RootfsError("fetch-auto needs debootstrap: apt-get install debootstrap")
        release = host_release(self.etc)
        await output(f"Bootstrapping {release.name} ({release.codename}) from {release.mirror}\n")
        argv = [exe, "--variant=minbase", release.codename, str(dest), release.mirror]
        try:
            await self._stream(argv, output)
        finally:
            with trio.CancelScope(shield=True):
                await _unmount_below(dest)
        return release.name, os.uname().machine

    async def _stream(self, argv: list[str], output: Emit) -> None:
        start = time.monotonic()
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        last: list[str] = []
        try:
            assert proc.stdout is not None
            pending = b""
            while chunk := await proc.stdout.receive_some(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    last = [*last[-(_LAST_LINES - 1):], line]
                    await output(line + "\n")
            rc = await proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                await _stop_group(proc)
        log.debug("host command", extra={"argv": argv, "rc": rc, "ms": f"{(time.monotonic() - start) * 1000:.1f}"})
        if rc != 0:
            tail = next((line for line in reversed(last) if line.strip()), "")
            raise RootfsError(f"debootstrap exited with {rc}: {tail}")


async def _stop_group(proc: trio.Process) -> None:
    """Stop debootstrap and whatever is left of its process group; reap; close our pipe.

    A cancelled debootstrap gets TERM (its traps unmount what it mounted), then KILL after the
    grace period. Its children may outlive it and, the daemon being a child subreaper, are
    reparented to us: they are killed and reaped here by pid, never by `waitpid(-1)` (see
    `reaper`: that would steal the statuses trio and the supervisor wait for).
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with trio.move_on_after(_STOP_GRACE):
            await proc.wait()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    await _reap_group(proc.pid)
    if proc.stdout is not None:
        await proc.stdout.aclose()


async def _reap_group(pgid: int) -> None:
    me = os.getpid()
    with trio.move_on_after(_STOP_GRACE):
        while members := _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            for pid, ppid in members.items():
                if ppid == me and pid != pgid:  # the leader is trio's to reap
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
            await trio.sleep(0.05)
    if leftover := _group_members(pgid):
        log.warning("debootstrap processes survived SIGKILL and leaked: %s", sorted(leftover))


def _group_members(pgid: int) -> dict[int, int]:
    """pid -> parent pid of every live or zombie process in the process group `pgid`."""
    members = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        except OSError:
            continue  # exited between scandir and open
        if int(fields[2]) == pgid:
            members[int(entry.name)] = int(fields[1])
    return members


async def _unmount_below(path: Path) -> None:
    for mount in mountinfo.mounts_under(path.resolve()):
        await hostcmd.run(["umount", "--lazy", mount.mountpoint])


# --- host directories and files (synchronous: run in a worker thread) ---------------------------
