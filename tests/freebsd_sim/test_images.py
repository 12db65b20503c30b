"""fetch-auto and freebsd-update (FreeBSDRootfs) against the SIMULATED FreeBSD host: the release
comes from sysctl, the archive from a local mirror laid out like download.freebsd.org, and
freebsd-update is the simulation's (it records its arguments and downloads nothing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kleene_protocol.models import ImageCreateConfig
from kleened.core.image_create import create_image
from kleened.platform.freebsd import mounts
from kleened.platform.freebsd.images import FreeBSDRootfs
from kleened.platform.posix.rootfs import RootfsError
from tests.freebsd_sim.conftest import Drivers, run
from tests.freebsd_sim.host import SimHost


def test_fetch_auto_from_the_hosts_release(sim: SimHost, drivers: Drivers, tmp_path: Path):
    mirror = tmp_path / "mirror"
    release = mirror / "releases/amd64/amd64/14.1-RELEASE"  # the host runs 14.1-RELEASE-p5 (simulated sysctl)
    release.mkdir(parents=True)
    shutil.copy(drivers.tarball, release / "base.txz")
    source = FreeBSDRootfs(tmp_path / "work", drivers.commands, mirror=mirror.as_uri())
    records, lines = [], []

    async def emit(text: str) -> None:
        lines.append(text)

    async def body() -> None:
        config = ImageCreateConfig(method="fetch-auto", dns=False, localtime=False, autotag=True)
        await create_image(config, storage=drivers.storage, source=source, add=records.append, emit=emit)

    run(body)
    assert (records[0].name, records[0].tag) == ("FreeBSD-14.1-RELEASE-p5", "latest")
    assert lines[-1] == "Created image from the automatically detected version: FreeBSD-14.1-RELEASE-p5 amd64.\n"
    assert "Unpacking contents and creating image...\n" in lines


def test_update_uses_the_images_release_and_its_own_workdir(sim: SimHost, drivers: Drivers, tmp_path: Path):
    image = tmp_path / "image"
    (image / "bin").mkdir(parents=True)
    (image / "bin/freebsd-version").write_text('#!/bin/sh\nUSERLAND_VERSION="13.2-RELEASE-p3"\n')
    source = FreeBSDRootfs(tmp_path / "work", drivers.commands)
    lines: list[str] = []

    async def emit(text: str) -> None:
        lines.append(text)

    run(source.update, image, emit)  # "nothing to install" is not a failure
    runs = sim.state.load("freebsd-update", [])
    assert [r[-1] for r in runs] == ["fetch", "install"]
    for argv in runs:
        assert argv[argv.index("--currently-running") + 1] == "13.2-RELEASE-p3"
        assert argv[argv.index("-b") + 1] == str(image)
        assert argv[argv.index("-d") + 1].startswith(str(tmp_path / "work" / "freebsd-update-"))
    assert not list((tmp_path / "work").iterdir())  # the work directory is gone
    assert "No updates needed to update system to 13.2-RELEASE-p3.\n" in lines
    (image / "bin/freebsd-version").unlink()
    with pytest.raises(RootfsError, match="has no /bin/freebsd-version"):
        run(source.update, image, emit)


def test_start_up_cleanup_never_deletes_through_a_mount(sim: SimHost, drivers: Drivers, tmp_path: Path):
    """The work directory is emptied at start-up, except what has a mount below it (seen with
    the simulated `mount -p`); the mount's source keeps its files."""
    work = sim.state.root / "work"  # mounts land inside the simulated host only
    work.mkdir()
    rootfs = FreeBSDRootfs(work, drivers.commands)
    (work / "download-left").write_text("partial")
    (work / "context" / "in").mkdir(parents=True)
    source = tmp_path / "precious"
    source.mkdir()
    (source / "file").write_text("keep")
    run(drivers.commands.run, mounts.mount_argv(mounts.prepare(work / "context", source, "/in")))
    rootfs.cleanup()
    assert sorted(p.name for p in work.iterdir()) == ["context"]
    run(drivers.commands.run, mounts.umount_argv(str(work / "context" / "in")))
    assert (source / "file").read_text() == "keep"
    rootfs.cleanup()
    assert list(work.iterdir()) == []
