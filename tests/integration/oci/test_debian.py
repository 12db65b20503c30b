"""A Debian image pulled from a registry runs apt-get. The image is made here, once per run:
`debootstrap --variant=minbase` of the host's release from the host's configured mirror (no
public registry is reachable from CI), apt's caches emptied as Debian's own images have them,
packed as a one-layer zstd OCI layout, copied into the test registry by skopeo, then pulled by
kleened like any image. It needs the mirror and costs about 95 s on the 2-core CI machine
(debootstrap most of it; bench/README.md), so it runs by default."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kleened.platform.linux.rootfs import host_release
from tests.conftest import require
from tests.integration.oci.conftest import pulled
from tests.oci_layouts import Layout
from tests.wsapi import exec_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def debian_layout(workdir: Path) -> Iterator[Path]:
    require(shutil.which("debootstrap") is not None, "needs debootstrap (Debian package debootstrap)")
    release = host_release()
    rootfs = workdir / "debian-rootfs"
    try:
        done = subprocess.run(["debootstrap", "--variant=minbase", release.codename, str(rootfs), release.mirror],
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"debootstrap from {release.mirror} failed:\n{done.stdout[-2000:]}{done.stderr}"
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        layout = Layout(workdir / "layout-debian")
        layout.tag(layout.image([layout.layer_of_dir(rootfs, "zstd")], {"Cmd": ["bash"], "Env": [PATH]}),
                   release.codename)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    yield layout.dest
    shutil.rmtree(layout.dest, ignore_errors=True)


def test_a_debian_image_runs_apt_get(oci_daemon, registry, debian_layout):
    codename = host_release().codename
    registry.copy_in(debian_layout, f"library/debian:{codename}")
    reference = f"{registry.host}/library/debian:{codename}"
    image_id = pulled(oci_daemon, reference)
    with oci_daemon.client() as api:
        image = api.get(f"/images/{image_id}/inspect").json()
        assert image["cmd"] == ["bash"] and PATH in image["env"], image
        r = api.post("/containers/create", json={"image": reference, "cmd": ["apt-get", "--version"],
                                                 "network_driver": "host"})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    stream = exec_stream(oci_daemon, eid, timeout=120)
    assert stream.text.startswith("apt "), stream.text
    assert "exited with exit-code 0" in stream.close_reason["message"], stream.close_reason
    with oci_daemon.client() as api:
        assert api.delete(f"/containers/{cid}").status_code == 200
        assert api.delete(f"/images/{image_id}").status_code == 200
