"""Archives: save writes an OCI layout tar (plus docker's manifest.json) that skopeo reads and podman
loads; load reads our archives, podman's docker-archive and oci-archive, gzip; a corrupt archive
is refused and leaves nothing."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.conftest import require
from tests.daemon import Daemon
from tests.integration.oci.conftest import pulled
from tests.oci_layouts import busybox_layout
from tests.wsapi import collect, connect, create_image, exec_stream, run_stream

pytestmark = pytest.mark.integration


def layers(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.state_root / "layers").iterdir()}


def save(daemon: Daemon, *images: str) -> bytes:
    stream = run_stream(daemon, "/images/save", {"images": list(images)})
    assert stream.close_code == 1000, (stream.text[-300:], stream.close_reason)
    return b"".join(f for f in stream.frames[1:] if isinstance(f, bytes))


def load(daemon: Daemon, archive: bytes, **config) -> tuple[int, dict, str]:
    with connect(daemon, "/images/load") as ws:
        ws.send(json.dumps(config))
        for i in range(0, len(archive), 200_000):
            ws.send(archive[i:i + 200_000])
        ws.send(b"")
        stream = collect(ws)
    return stream.close_code, stream.close_reason, stream.text


def podman(root: Path, run: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """podman with its own storage (vfs: no mounts) and a run root short enough for podman (50 characters)."""
    return subprocess.run(["podman", "--root", str(root / "root"), "--runroot", str(run), "--storage-driver", "vfs",
                           *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pulled_image(oci_daemon, registry, workdir, tree) -> str:
    layout = workdir / "layout-archive"
    busybox_layout(layout, tree, "a", extra=[[("etc/", None), ("etc/archived", b"archived\n")]],
                   config={"Env": ["FROM_ARCHIVE=1"], "Cmd": ["/bin/cat", "/etc/archived"]})
    registry.copy_in(layout, "tests/archive:a")
    pulled(oci_daemon, f"{registry.host}/tests/archive:a")
    return f"{registry.host}/tests/archive:a"


def test_save_writes_a_valid_oci_layout(oci_daemon, pulled_image, tmp_path):
    made = create_image(oci_daemon, tag=f"saved{secrets.token_hex(2)}:1")
    data = save(oci_daemon, pulled_image, made)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/"):
                content = tar.extractfile(member).read()
                assert hashlib.sha256(content).hexdigest() == member.name.rsplit("/", 1)[1]
        index = json.load(tar.extractfile("index.json"))
        docker = json.load(tar.extractfile("manifest.json"))
    assert len(index["manifests"]) == 2 and index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert docker[0]["RepoTags"] == [pulled_image]
    archive = tmp_path / "saved.tar"
    archive.write_bytes(data)
    for source in (f"oci-archive:{archive}:a", f"docker-archive:{archive}:@1"):
        shown = subprocess.run(["skopeo", "inspect", source], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
    assert save(oci_daemon, pulled_image) == save(oci_daemon, pulled_image)  # deterministic bytes


def test_load_round_trip_through_podman(oci_daemon, pulled_image, tmp_path):
    require(shutil.which("podman") is not None, "needs podman (Debian package podman)")
    archive = tmp_path / "ours.tar"
    archive.write_bytes(save(oci_daemon, pulled_image))
    with tempfile.TemporaryDirectory(prefix="kpod") as run:
        loaded = podman(tmp_path, Path(run), "load", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr
        assert pulled_image in podman(tmp_path, Path(run), "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        for kind in ("docker-archive", "oci-archive"):
            saved = podman(tmp_path, Path(run), "save", "--format", kind, "-o", str(tmp_path / f"{kind}.tar"),
                           pulled_image)
            assert saved.returncode == 0, saved.stderr
    for kind in ("docker-archive", "oci-archive"):
        code, reason, text = load(oci_daemon, (tmp_path / f"{kind}.tar").read_bytes(), tag=f"back-{kind}:1")
        assert code == 1000, (text, reason)
        image_id = reason["data"]
        with oci_daemon.client() as api:
            image = api.get(f"/images/{image_id}/inspect").json()
            assert image["cmd"] == ["/bin/cat", "/etc/archived"] and "FROM_ARCHIVE=1" in image["env"]
            cid = api.post("/containers/create", json={"image": image_id, "network_driver": "host"}).json()["id"]
            eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
        assert "archived" in exec_stream(oci_daemon, eid).text


def test_load_our_archive_gzipped_shares_layers(oci_daemon, pulled_image):
    data = save(oci_daemon, pulled_image)
    before = layers(oci_daemon)
    code, reason, text = load(oci_daemon, gzip.compress(data))
    assert code == 1000, (text, reason)
    assert "Already exists" in text and f"Loaded image: {pulled_image}" in text
    assert layers(oci_daemon) == before  # every layer was there: our tars' diff ids are recorded


def test_a_corrupt_archive_is_refused_and_leaves_nothing(oci_daemon, tmp_path):
    made = create_image(oci_daemon, tag=f"corrupt{secrets.token_hex(2)}:1")
    data = bytearray(save(oci_daemon, made))
    with oci_daemon.client() as api:
        assert api.delete(f"/images/{made}").status_code == 200
    before = layers(oci_daemon)
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        biggest = max(tar.getmembers(), key=lambda m: m.size)
    data[biggest.offset_data + biggest.size // 2] ^= 0xFF
    code, reason, _ = load(oci_daemon, bytes(data))
    assert code == 1011 and ("mismatch" in reason["message"] or "diff id" in reason["message"]), reason
    assert layers(oci_daemon) == before
    code, reason, _ = load(oci_daemon, b"not a tar archive at all" * 100)
    assert code == 1011 and "image load failed" in reason["message"]
    assert not list((oci_daemon.state_root / "tmp" / "oci").glob("load-*"))


def test_klee_save_and_load(oci_daemon, pulled_image, tmp_path):
    def klee(*args: str):
        return run_cli([sys.executable, "-m", "klee", "--host", oci_daemon.host, *args], timeout=120,
                       env={"HOME": str(tmp_path)})

    archive = tmp_path / "klee.tar"
    saved = klee("image", "save", "-o", str(archive), pulled_image)
    assert saved.returncode == 0 and archive.stat().st_size > 0 and not (tmp_path / "klee.tar.part").exists(), saved
    missing = klee("save", "-o", str(tmp_path / "none.tar"), "no-such-image")
    assert missing.returncode != 0 and "no such image" in missing.stderr
    assert not (tmp_path / "none.tar").exists() and not (tmp_path / "none.tar.part").exists()
    loaded = klee("load", "-i", str(archive))
    assert loaded.returncode == 0 and f"Loaded image: {pulled_image}" in loaded.stdout, loaded
