"""Pushing to real registries: images made here (deterministic layer tars, verified by skopeo and
by pulling them back), pulled images (blobs mounted across repositories, or already there)."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.integration.oci.conftest import progress, pulled, write_auth
from tests.oci_layouts import busybox_layout
from tests.registry import Registry
from tests.wsapi import create_image, run_stream

pytestmark = pytest.mark.integration


def push(daemon: Daemon, image: str, reference: str = "", **config):
    return run_stream(daemon, "/images/push", {"image": image, "reference": reference, **config})


def pushed(daemon: Daemon, image: str, reference: str = "", **config) -> tuple[str, list[str]]:
    stream = push(daemon, image, reference, **config)
    assert stream.close_code == 1000, (stream.frames[-3:], stream.close_reason)
    assert stream.close_reason["message"] == "image pushed"
    statuses = [p["status"] for p in progress(stream) if p["status"] not in ("Pushing", "Preparing")]
    return "sha256:" + stream.close_reason["data"], statuses


def skopeo_inspect(registry: Registry, reference: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--cert-dir", str(registry.cert_dir), "--creds",
                          "tester:s3cret-pass", f"docker://{registry.host}/{reference}"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def test_push_an_image_made_here_and_pull_it_back(oci_daemon, registry):
    image_id = create_image(oci_daemon, tag=f"made{secrets.token_hex(2)}:1")
    target = f"{registry.host}/tests/made:{secrets.token_hex(2)}"
    digest, statuses = pushed(oci_daemon, image_id, target)
    assert digest.startswith("sha256:") and statuses == ["Pushed"]
    manifest = skopeo_inspect(registry, target.split("/", 1)[1])
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json" and len(manifest["layers"]) == 1
    again, statuses = pushed(oci_daemon, image_id, target)
    assert again == digest and statuses == ["Layer already exists"]  # same bytes: the digest is stable
    with oci_daemon.client() as api:
        back = api.get(f"/images/{pulled(oci_daemon, target)}/inspect").json()
        original = api.get(f"/images/{image_id}/inspect").json()
    assert back["digest"] == digest and back["cmd"] == original["cmd"] == ["/bin/sh"]
    assert Path(back["dataset"]) == Path(original["dataset"])  # our own tar's diff id: the same layer, not a copy


def test_push_a_pulled_image_mounts_its_blobs(oci_daemon, registry, workdir, tree):
    layout = workdir / "layout-mount"
    busybox_layout(layout, tree, "m", extra=[[("etc/", None), ("etc/m", secrets.token_bytes(8))]],
                   salt=secrets.token_bytes(8))
    registry.copy_in(layout, "tests/source:m")
    source = f"{registry.host}/tests/source:m"
    pulled(oci_daemon, source)
    _, statuses = pushed(oci_daemon, source, f"{registry.host}/tests/copy:m")
    assert statuses == ["Mounted", "Mounted"]
    _, statuses = pushed(oci_daemon, source, f"{registry.host}/tests/copy:m2")
    assert statuses == ["Layer already exists"] * 2
    assert skopeo_inspect(registry, "tests/copy:m2")["layers"] == skopeo_inspect(registry, "tests/source:m")["layers"]


def test_push_with_token_auth_and_to_another_registry(oci_daemon, token_registry, plain_registry, workdir, tree):
    layout = workdir / "layout-cross"
    busybox_layout(layout, tree, "x", extra=[[("etc/", None), ("etc/x", secrets.token_bytes(8))]],
                   salt=secrets.token_bytes(8))
    plain_registry.copy_in(layout, "tests/cross:x")
    source = f"{plain_registry.host}/tests/cross:x"
    pulled(oci_daemon, source)
    creds = {token_registry.host: {"username": "tester", "password": "s3cret-pass"}}
    refused = push(oci_daemon, source, f"{token_registry.host}/private/cross:x")
    assert refused.close_code == 1011, refused
    _, statuses = pushed(oci_daemon, source, f"{token_registry.host}/private/cross:x", credentials=creds)
    assert statuses == ["Pushed", "Pushed"]  # another registry: our own tars go up


def test_push_errors(oci_daemon, registry):
    assert "no such image" in push(oci_daemon, "absent-image").close_reason["message"]
    untagged = create_image(oci_daemon)
    assert "has no name" in push(oci_daemon, untagged).close_reason["message"]
    digest_ref = push(oci_daemon, untagged, f"{registry.host}/x@sha256:{'a' * 64}")
    assert "cannot push to a digest" in digest_ref.close_reason["message"]
    with oci_daemon.client() as api:
        assert api.delete(f"/images/{untagged}").status_code == 200


def test_write_auth_is_private(tmp_path):
    assert (write_auth(tmp_path / "a.json", "x").stat().st_mode & 0o777) == 0o600
