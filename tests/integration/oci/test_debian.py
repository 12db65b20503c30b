"""A Debian image pulled from a registry runs apt-get. The image is made here: debootstrap of the
host's release (minbase) packed as an OCI layout, copied into the test registry by skopeo (no
public registry is reachable from CI). Opt-in like the other debootstrap test: it takes minutes
and needs the host's Debian mirror (KLEENE_TEST_DEBOOTSTRAP=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kleened.platform.linux.rootfs import host_release
from tests.integration.oci.conftest import pulled
from tests.oci_layouts import Layout, tar_of_dir
from tests.wsapi import exec_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def debian_layout(workdir: Path) -> Path:
    if not os.environ.get("KLEENE_TEST_DEBOOTSTRAP"):
        pytest.skip("set KLEENE_TEST_DEBOOTSTRAP=1 to debootstrap a Debian image (minutes, needs a mirror)")
    if shutil.which("debootstrap") is None:
        pytest.fail("KLEENE_TEST_DEBOOTSTRAP=1 needs debootstrap (Debian package debootstrap)")
    release = host_release()
    rootfs = workdir / "debian-rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", release.codename, str(rootfs), release.mirror],
                   check=True, capture_output=True, timeout=1800)
    layout = Layout(workdir / "layout-debian")
    layout.tag(layout.image([layout.layer(tar_of_dir(rootfs))], {"Cmd": ["bash"], "Env": [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}), release.codename)
    return layout.dest


def test_a_debian_image_runs_apt_get(oci_daemon, registry, debian_layout):
    codename = host_release().codename
    registry.copy_in(debian_layout, f"library/debian:{codename}")
    reference = f"{registry.host}/library/debian:{codename}"
    pulled(oci_daemon, reference)
    with oci_daemon.client() as api:
        r = api.post("/containers/create", json={"image": reference, "cmd": ["apt-get", "--version"],
                                                 "network_driver": "host"})
        assert r.status_code == 201, r.text
        eid = api.post("/exec/create", json={"container_id": r.json()["id"]}).json()["id"]
    stream = exec_stream(oci_daemon, eid, timeout=120)
    assert stream.text.startswith("apt "), stream.text
    assert "exited with exit-code 0" in stream.close_reason["message"], stream.close_reason
