"""fetch-auto URLs and freebsd-update command lines (platform/freebsd/images.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleened.platform.freebsd import images
from kleened.platform.posix.rootfs import RootfsError


@pytest.mark.parametrize(("release", "machine", "arch", "url"), [
    ("14.1-RELEASE", "amd64", "amd64", "https://download.freebsd.org/releases/amd64/amd64/14.1-RELEASE/base.txz"),
    ("14.1-RELEASE-p5", "amd64", "amd64", "https://download.freebsd.org/releases/amd64/amd64/14.1-RELEASE/base.txz"),
    # upstream used `uname -m` alone, wrong for arm64
    ("13.3-RELEASE", "arm64", "aarch64", "https://download.freebsd.org/releases/arm64/aarch64/13.3-RELEASE/base.txz"),
    ("14.1-STABLE", "amd64", "amd64", "https://download.freebsd.org/snapshots/amd64/amd64/14.1-STABLE/base.txz"),
])
def test_base_url(release, machine, arch, url):
    assert images.base_url(release, machine, arch) == url


@pytest.mark.parametrize("release", ["15.0-CURRENT", "14.2-BETA1", "14.2-RC2", "junk"])
def test_unsupported_versions_give_upstreams_message(release):
    with pytest.raises(RootfsError, match=f"could not deduce url from FreeBSD version {release}"):
        images.base_url(release, "amd64", "amd64")


def test_autotag_and_facts():
    assert images.image_name("14.1-RELEASE-p5") == "FreeBSD-14.1-RELEASE-p5"
    assert images.FACTS_ARGV == ["sysctl", "-n", "kern.osrelease", "hw.machine", "hw.machine_arch"]
    assert images.parse_facts("14.1-RELEASE-p5\namd64\namd64\n") == ("14.1-RELEASE-p5", "amd64", "amd64")
    with pytest.raises(RootfsError):
        images.parse_facts("14.1-RELEASE\n")


def test_the_images_release_is_read_not_run(tmp_path: Path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/freebsd-version").write_text('#!/bin/sh\nUSERLAND_VERSION="13.2-RELEASE-p11"\necho hi\n')
    assert images.userland_version(tmp_path) == "13.2-RELEASE-p11"
    assert images.userland_version(tmp_path / "missing") is None


def test_update_lines_name_the_images_release_and_a_private_workdir():
    fetch, install = images.update_argvs(Path("/zroot/kleene/image/abc"), Path("/var/tmp/u1"), "13.2-RELEASE-p11")
    common = ["freebsd-update", "-b", "/zroot/kleene/image/abc", "-d", "/var/tmp/u1", "--currently-running",
              "13.2-RELEASE-p11", "--not-running-from-cron"]
    assert fetch == [*common, "fetch"]
    assert install == [*common, "install"]
