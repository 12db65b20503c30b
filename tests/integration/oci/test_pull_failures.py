"""Pulls that break: a corrupt blob, a connection cut mid-blob (retried), a registry that dies
mid-blob, a client that goes away, a daemon killed mid-pull. None may leave a layer behind."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest
import trustme

from tests.daemon import Daemon
from tests.integration.oci.conftest import daemon_config, progress, pull, write_auth
from tests.oci_layouts import Layout, random_file, tar_of_dir, tar_of_entries
from tests.registry import Registry, running_registry
from tests.wsapi import connect

pytestmark = pytest.mark.integration


def layers(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.state_root / "layers").iterdir()}


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def unique_image(workdir: Path, tree: Path, registry: Registry, size: int = 4 << 20) -> tuple[str, dict]:
    """An image whose top layer no other test has (random content): (repository:tag, its descriptor)."""
    name = f"tests/u{secrets.token_hex(3)}"
    layout_dir = workdir / f"layout-{name.split('/')[1]}"
    layout = Layout(layout_dir)
    top = layout.layer(tar_of_entries([("data/", None), ("data/blob", random_file(size, hash(name)))]))
    layout.tag(layout.image([layout.layer(tar_of_dir(tree)), top]), "1")
    registry.copy_in(layout_dir, f"{name}:1")
    return f"{name}:1", top[0]


def test_digest_mismatch_is_refused_and_nothing_kept(oci_daemon, plain_registry, workdir, tree):
    ref, top = unique_image(workdir, tree, plain_registry)
    stored = plain_registry.workdir / "storage/docker/registry/v2/blobs/sha256"
    data = stored / top["digest"][7:9] / top["digest"][7:] / "data"
    corrupt = bytearray(data.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    data.write_bytes(bytes(corrupt))
    before = layers(oci_daemon)
    stream = pull(oci_daemon, f"{plain_registry.host}/{ref}")
    assert stream.close_code == 1011, stream
    message = stream.close_reason["message"]
    assert "digest mismatch" in message or "could not decompress" in message, message
    assert layers(oci_daemon) == before


def test_a_cut_transfer_is_retried(oci_daemon, plain_registry, proxy, workdir, tree):
    ref, _ = unique_image(workdir, tree, plain_registry)
    proxy.upstream, proxy.cut = plain_registry.host, 1
    stream = pull(oci_daemon, f"{proxy.host}/{ref}")
    assert stream.close_code == 1000, stream
    assert "Retrying" in [p["status"] for p in progress(stream)]


def test_a_registry_that_dies_mid_blob(oci_daemon, proxy, workdir, tree, ca):
    with running_registry(workdir / "registry-doomed", ca, "none") as doomed:
        ref, _ = unique_image(workdir, tree, doomed)
        proxy.upstream, proxy.cut, proxy.on_cut = doomed.host, 1, doomed.stop
        before = layers(oci_daemon)
        try:
            stream = pull(oci_daemon, f"{proxy.host}/{ref}")
        finally:
            proxy.on_cut, proxy.cut = None, 0
    assert stream.close_code == 1011, stream
    assert layers(oci_daemon) == before


def test_a_client_that_goes_away_cancels_the_pull(oci_daemon, plain_registry, proxy, workdir, tree):
    ref, _ = unique_image(workdir, tree, plain_registry)
    before = layers(oci_daemon)
    proxy.upstream, proxy.stall = plain_registry.host, True
    proxy.release.clear()
    proxy.halfway.clear()
    try:
        with connect(oci_daemon, "/images/pull") as ws:
            ws.send(json.dumps({"reference": f"{proxy.host}/{ref}"}))
            assert proxy.halfway.wait(30)
        wait_for(lambda: layers(oci_daemon) == before)
    finally:
        proxy.stall = False
        proxy.release.set()
    with oci_daemon.client() as api:
        assert api.get(f"/images/{proxy.host}/{ref}/inspect").status_code == 404


def test_a_daemon_killed_mid_pull_leaves_nothing_after_restart(plain_registry, proxy, workdir, tree, registry):
    ref, _ = unique_image(workdir, tree, plain_registry)
    home = workdir / "daemon-killed"
    home.mkdir()
    extra = daemon_config(registry.ca_file, write_auth(workdir / "auth-killed.json"), [proxy.host])
    daemon = Daemon(workdir=home, prefix="kt" + secrets.token_hex(2), extra=extra)
    daemon.start()
    proxy.upstream, proxy.stall = plain_registry.host, True
    proxy.release.clear()
    proxy.halfway.clear()
    try:
        with connect(daemon, "/images/pull") as ws:
            ws.send(json.dumps({"reference": f"{proxy.host}/{ref}"}))
            assert proxy.halfway.wait(30)
            wait_for(lambda: len(layers(daemon)) == 2)  # the base layer done, the top one half-way
            daemon.kill()
    finally:
        proxy.stall = False
        proxy.release.set()
    daemon.start()
    try:
        assert layers(daemon) == set()
        with daemon.client() as api:
            assert api.get("/images/list").json() == []
    finally:
        daemon.stop()


def test_redirects_to_blob_storage_are_followed_without_credentials(oci_daemon, plain_registry, proxy, workdir,
                                                                     tree):
    ref, _ = unique_image(workdir, tree, plain_registry, size=1 << 20)
    proxy.upstream, proxy.redirect = plain_registry.host, True
    proxy.authorizations.clear()
    try:
        stream = pull(oci_daemon, f"{proxy.host}/{ref}")
    finally:
        proxy.redirect = False
    assert stream.close_code == 1000, stream
    assert proxy.authorizations and set(proxy.authorizations) == {""}  # localhost is another host than 127.0.0.1


def test_an_untrusted_certificate_is_refused_at_once(oci_daemon, workdir, tree):
    other_ca = trustme.CA()
    with running_registry(workdir / "registry-untrusted", other_ca, "htpasswd") as untrusted:
        stream = pull(oci_daemon, f"{untrusted.host}/tests/anything:1")
    assert stream.close_code == 1011
    assert "CERTIFICATE_VERIFY_FAILED" in stream.close_reason["message"] or "certificate" in stream.text, stream
    assert "giving up" not in stream.text  # not retried: a retry cannot fix it
