"""Base images on FreeBSD: fetch-auto's URL from the host's release, and `freebsd-update` for the
image-create `update` option. The archive itself is fetched and extracted by the portable code
the Linux driver uses (httpx, and `platform.posix.tar`'s safe extractor), so a hostile base.txz
cannot write outside the image's dataset.

Upstream's traps avoided:
- fetch-auto used `uname -m` as the URL's architecture, wrong for arm64 (`arm64/aarch64`); the
  URL here is bsdinstall's `releases/<hw.machine>/<hw.machine_arch>/<X.Y-RELEASE>/base.txz`;
- B12: no shared `/<root>/base.txz`: each download gets its own temporary file, removed after;
- `update` ran freebsd-update without `--currently-running`, so it assumed the *host's* release
  for an image of another, and without `-d`, so concurrent updates shared one work directory.
  Here the image's own release is read from its `/bin/freebsd-version` *as text* (never run on
  the host: it is the image's script), and each run gets its own work directory.
- the archive keeps no BSD file flags (`schg`): posix_tar does not restore them (bsdtar did);
  inside a jail that only means the image's files are not immutable.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from kleened.platform.base import HostCommandError
from kleened.platform.posix.rootfs import HostRootfs, RootfsError
from kleened.platform.posix.rootpath import read_text_in_root

from . import mounts
from .command import LONG_TIMEOUT, Commands

Emit = Callable[[str], Awaitable[None]]
MIRROR = "https://download.freebsd.org"
FACTS_ARGV = ["sysctl", "-n", "kern.osrelease", "hw.machine", "hw.machine_arch"]
_RELEASE = re.compile(r"(\d+\.\d+)-(RELEASE|STABLE)(-p\d+)?")
_USERLAND = re.compile(r'^USERLAND_VERSION="([^"\n]+)"', re.MULTILINE)
NOTHING_TO_INSTALL = "No updates are available to install."


def base_url(release: str, machine: str, machine_arch: str, *, mirror: str = MIRROR) -> str:
    """`14.1-RELEASE-p5` on amd64 -> `.../releases/amd64/amd64/14.1-RELEASE/base.txz` (the patch
    level is dropped: only the release is published); STABLE -> `.../snapshots/...`."""
    match = _RELEASE.fullmatch(release)
    if match is None:
        raise RootfsError(f"could not deduce url from FreeBSD version {release}")
    kind = "releases" if match.group(2) == "RELEASE" else "snapshots"
    return f"{mirror}/{kind}/{machine}/{machine_arch}/{match.group(1)}-{match.group(2)}/base.txz"


def image_name(release: str) -> str:
    """fetch-auto's autotag name (upstream's `FreeBSD-<version>`, patch level kept)."""
    return f"FreeBSD-{release}"


def parse_facts(text: str) -> tuple[str, str, str]:
    """`sysctl -n kern.osrelease hw.machine hw.machine_arch` -> (release, machine, machine_arch)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 3:
        raise RootfsError(f"could not read the host's FreeBSD version from sysctl: {text.strip()!r}")
    return lines[0], lines[1], lines[2]


def userland_version(root: Path) -> str | None:
    """The image's release from its `/bin/freebsd-version` script, read as text inside the root."""
    text = read_text_in_root(root, "/bin/freebsd-version")
    match = _USERLAND.search(text or "")
    return match.group(1) if match else None


def update_argvs(root: Path, workdir: Path, release: str) -> list[list[str]]:
    """`fetch` then `install` for the image at `root`, as the image's own release, in a private
    work directory."""
    common = ["freebsd-update", "-b", str(root), "-d", str(workdir), "--currently-running", release,
              "--not-running-from-cron"]
    return [[*common, "fetch"], [*common, "install"]]


class FreeBSDRootfs(HostRootfs):
    """`RootfsSource` on FreeBSD: fetch and extract as on Linux; fetch-auto from the host's
    release; `update` with freebsd-update. `workdir` holds downloads and update work dirs."""

    def __init__(self, workdir: Path, commands: Commands, *, mirror: str = MIRROR) -> None:
        super().__init__(workdir)
        self.commands = commands
        self.mirror = mirror

    def mounted_below(self, path: Path) -> bool:
        """`mount -p` (start-up cleanup runs in a worker thread, so a blocking call is fine)."""
        done = subprocess.run(self.commands.resolve(mounts.MOUNTS_ARGV), capture_output=True, text=True, check=True,
                              close_fds=True, timeout=30)
        top = str(path).rstrip("/")
        return any(m.node == top or m.node.startswith(top + "/") for m in mounts.parse_mount_p(done.stdout))

    async def bootstrap(self, dest: Path, output: Emit) -> tuple[str, str]:
        """fetch-auto: the host's release's base.txz into `dest`; (image name, machine)."""
        release, machine, arch = parse_facts(await self.commands.run(FACTS_ARGV))
        url = base_url(release, machine, arch, mirror=self.mirror)
        async with self.fetched(url, output) as archive:
            await output("Succesfully fetched base system.\n")  # upstream's spelling
            await output("Unpacking contents and creating image...\n")

            async def count(n: int) -> None:
                await output(f"Extracted {n} files...\n")

            await self.extract(archive, dest, count)
        return image_name(release), machine

    async def update(self, root: Path, output: Emit) -> None:
        """Run freebsd-update on the image at `root`; its output is relayed line by line."""
        release = userland_version(root)
        if release is None:
            raise RootfsError("could update base image with 'freebsd-update': the image has no /bin/freebsd-version")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="freebsd-update-", dir=self.workdir) as work:
            for argv in update_argvs(root, Path(work), release):
                lines: list[str] = []
                try:
                    await self.commands.stream(argv, _keeping(lines, output), timeout=LONG_TIMEOUT)
                except HostCommandError as exc:
                    if argv[-1] == "install" and NOTHING_TO_INSTALL in "".join(lines):
                        continue  # freebsd-update exits non-zero when there is nothing to install
                    raise RootfsError(f"could update base image with 'freebsd-update': {exc}") from None


def _keeping(lines: list[str], output: Emit) -> Emit:
    async def relay(line: str) -> None:
        lines.append(line)
        await output(line)

    return relay
