"""Pulling from real registries (distribution 2.8): basic and token auth, plain HTTP, indexes,
shared layers, whiteouts, configs, and failures that must leave nothing behind."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.integration.oci.conftest import progress, pull, pulled
from tests.oci_layouts import Layout, busybox_layout, tar_of_dir, tar_of_entries
from tests.registry import Registry
from tests.wsapi import exec_stream

pytestmark = pytest.mark.integration


def layers(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.state_root / "layers").iterdir()}


def run(api, daemon: Daemon, image: str, cmd: list[str]) -> tuple[str, str]:
    r = api.post("/containers/create", json={"image": image, "cmd": cmd, "network_driver": "host"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    stream = exec_stream(daemon, eid)
    return cid, stream.text


@pytest.fixture(scope="module")
def busybox_repo(workdir: Path, tree: Path, registry: Registry) -> str:
    layout = workdir / "layout-busybox"
    busybox_layout(layout, tree, "1", extra=[[("etc/", None), ("etc/motd", b"pulled\n")]],
                   config={"Env": ["PATH=/bin:/usr/bin", "GREETING=hello"], "WorkingDir": "/etc",
                           "Labels": {"org.example": "yes"}, "ExposedPorts": {"80/tcp": {}},
                           "StopSignal": "SIGQUIT", "Volumes": {"/data": {}},
                           "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000}})
    registry.copy_in(layout, "tests/busybox:1")
    return f"{registry.host}/tests/busybox:1"


def test_pull_runs_and_maps_the_config(oci_daemon, busybox_repo):
    with oci_daemon.client() as api:
        image_id = pulled(oci_daemon, busybox_repo)
        image = api.get(f"/images/{image_id}/inspect").json()
        name, tag = busybox_repo.rsplit(":", 1)
        assert (image["name"], image["tag"]) == (name, tag)
        assert image["source"] == busybox_repo and image["digest"].startswith("sha256:")
        assert (image["os"], image["architecture"]) == ("linux", "amd64")
        assert image["env"] == ["PATH=/bin:/usr/bin", "GREETING=hello"] and image["workdir"] == "/etc"
        assert image["labels"] == {"org.example": "yes"} and image["exposed_ports"] == ["80/tcp"]
        assert image["stop_signal"] == "SIGQUIT" and image["volumes"] == ["/data"]
        assert image["healthcheck"]["test"] == ["CMD", "true"] and image["healthcheck"]["interval"] == 5.0
        assert api.get(f"/images/{busybox_repo}/inspect").json()["id"] == image_id  # names with '/' and ':'
        _, out = run(api, oci_daemon, busybox_repo, ["/bin/sh", "-c", "cat motd; echo $GREETING; pwd"])
        assert out.splitlines()[:3] == ["pulled", "hello", "/etc"]


def test_second_pull_is_up_to_date_and_layers_are_shared(oci_daemon, busybox_repo, registry, workdir, tree):
    first = pulled(oci_daemon, busybox_repo)
    again = pull(oci_daemon, busybox_repo)
    assert again.close_reason["data"] == first and not progress(again)  # nothing transferred
    layout = workdir / "layout-busybox-child"
    busybox_layout(layout, tree, "2", extra=[[("etc/", None), ("etc/motd", b"pulled\n")],
                                             [("srv/", None), ("srv/new", b"new layer\n")]])
    registry.copy_in(layout, "tests/busybox:2")
    before = layers(oci_daemon)
    stream = pull(oci_daemon, f"{registry.host}/tests/busybox:2")
    assert stream.close_code == 1000, stream
    statuses = [p["status"] for p in progress(stream) if p["status"] in ("Already exists", "Pull complete")]
    assert statuses.count("Already exists") == 2 and statuses.count("Pull complete") == 1
    assert len(layers(oci_daemon) - before) == 1


def test_whiteouts_hide_lower_entries(oci_daemon, registry, workdir, tree):
    layout_dir = workdir / "layout-whiteouts"
    layout = Layout(layout_dir)
    base = layout.layer(tar_of_dir(tree))
    add = layout.layer(tar_of_entries([("srv/", None), ("srv/keep", b"1"), ("srv/gone", b"2"),
                                       ("opt/", None), ("opt/old", b"3")]))
    delete = layout.layer(tar_of_entries([("srv/.wh.gone", b""), ("opt/.wh..wh..opq", b""), ("opt/new", b"4")]),
                          compression="zstd")
    layout.tag(layout.image([base, add, delete]), "wh")
    registry.copy_in(layout_dir, "tests/whiteouts:wh")
    with oci_daemon.client() as api:
        pulled(oci_daemon, f"{registry.host}/tests/whiteouts:wh")
        _, out = run(api, oci_daemon, f"{registry.host}/tests/whiteouts:wh", ["/bin/ls", "/srv", "/opt"])
    assert "keep" in out and "gone" not in out and "new" in out and "old" not in out


def test_token_auth_and_plain_http(oci_daemon, token_registry, plain_registry, workdir, tree):
    layout = workdir / "layout-small"
    busybox_layout(layout, tree, "t")
    token_registry.copy_in(layout, "private/busybox:t")
    token_registry.copy_in(layout, "public/busybox:t")
    plain_registry.copy_in(layout, "tests/busybox:t")
    denied = pull(oci_daemon, f"{token_registry.host}/private/busybox:t")  # anonymous: the token has no access
    assert denied.close_code == 1011 and "authentication" in denied.close_reason["message"]
    pulled(oci_daemon, f"{token_registry.host}/public/busybox:t")
    creds = {"username": "tester", "password": "s3cret-pass"}
    pulled(oci_daemon, f"{token_registry.host}/private/busybox:t", credentials={token_registry.host: creds})
    wrong = pull(oci_daemon, f"{token_registry.host}/private/busybox:t",
                 credentials={token_registry.host: {**creds, "password": "x"}})
    assert wrong.close_code == 1011 and "refused the credentials" in wrong.close_reason["message"]
    pulled(oci_daemon, f"{plain_registry.host}/tests/busybox:t")


def test_multi_platform_index(oci_daemon, registry, workdir, tree):
    layout_dir = workdir / "layout-index"
    layout = Layout(layout_dir)
    base = layout.layer(tar_of_dir(tree))
    amd = layout.image([base], os_arch=("linux", "amd64"), labels={"arch": "amd64"})
    arm = layout.image([base], os_arch=("linux", "arm64"), labels={"arch": "arm64"})
    layout.tag(layout.index([arm, amd]), "multi")
    registry.copy_in(layout_dir, "tests/multi:multi", all_platforms=True)
    ref = f"{registry.host}/tests/multi:multi"
    with oci_daemon.client() as api:
        native = api.get(f"/images/{pulled(oci_daemon, ref)}/inspect").json()
        assert native["labels"] == {"arch": "amd64"} and native["architecture"] == "amd64"
        other = api.get(f"/images/{pulled(oci_daemon, ref, platform='linux/arm64')}/inspect").json()
        assert other["labels"] == {"arch": "arm64"} and other["digest"] == native["digest"]
    missing = pull(oci_daemon, ref, platform="linux/s390x")
    assert missing.close_code == 1011
    assert "no image for platform linux/s390x" in missing.close_reason["message"]


def test_errors_are_one_line_and_leave_nothing(oci_daemon, registry):
    before = layers(oci_daemon)
    for reference, expected in [
        ("UPPER/Case", "invalid repository name"),
        (f"{registry.host}/tests/absent:1", "manifest unknown"),
        ("127.0.0.1:1/x:1", "cannot reach"),
    ]:
        stream = pull(oci_daemon, reference)
        assert stream.close_code == 1011, stream
        assert expected in stream.close_reason["message"], stream.close_reason
    assert layers(oci_daemon) == before


def test_pull_events_and_json_progress(oci_daemon, busybox_repo):
    stream = pull(oci_daemon, f"{busybox_repo}@{'0' * 3}")
    assert stream.close_code == 1011 and "invalid digest" in stream.close_reason["message"]
    name = f"tests/busybox:{secrets.token_hex(2)}"
    assert json.loads(pull(oci_daemon, busybox_repo).frames[0])["msg_type"] == "starting" and name


def test_image_routes_take_any_ident(oci_daemon, busybox_repo):
    with oci_daemon.client() as api:
        for ident in ("a%0Ab", "x/y/z:1"):  # %0A: a newline once decoded
            r = api.get(f"/images/{ident}/inspect")
            assert (r.status_code, r.json()) == (404, {"message": "image not found"}), ident
        r = api.post("/images/a%0Ab/tag", params={"nametag": "x:1"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
        r = api.delete("/images/no/such/image:1")
        assert r.status_code == 404 and "No such image" in r.json()["message"]
