"""Images against a real kleened: creation over the `/images/create` WebSocket from the busybox
rootfs tarball, and the REST routes with upstream's statuses and messages.

Prune is tested on a daemon of its own (a prune on the shared session daemon would remove
other modules' images). Parent/child chains need builds; until builds exist they are made
in-process with `Images.add` on a real store and overlay storage.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import unix_connect

from kleene_protocol.ids import new_id
from kleened.core.images import Images
from kleened.core.records import CONTAINER, ContainerRecord, ImageRecord
from kleened.core.store import Store
from kleened.platform.linux.overlay import OverlayStorage
from tests import rootfs
from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon

STARTING = {"msg_type": "starting", "message": "", "data": ""}


def klee_config(method: str, **overrides: Any) -> dict[str, Any]:
    """What klee sends: all eight keys, always."""
    config = {"method": method, "url": "", "zfs_dataset": "", "tag": "", "dns": True, "localtime": True,
              "update": False, "autotag": False}
    return {**config, **overrides}


def create(daemon: Daemon, config: dict[str, Any] | str, timeout: float = 120) -> tuple[list[str], int, dict | str]:
    """Run one image creation; return (frames, close code, decoded close reason)."""
    frames: list[str] = []
    with unix_connect(str(daemon.socket), uri="ws://localhost/images/create") as ws:
        ws.send(config if isinstance(config, str) else json.dumps(config))
        try:
            while True:
                frames.append(ws.recv(timeout=timeout))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            code, reason = exc.rcvd.code, exc.rcvd.reason
    assert len(reason.encode()) <= 123
    return frames, code, json.loads(reason) if reason else reason


def create_ok(daemon: Daemon, config: dict[str, Any]) -> tuple[str, list[str]]:
    frames, code, reason = create(daemon, config)
    assert code == 1000, (frames, reason)
    assert json.loads(frames[0]) == STARTING
    assert reason["msg_type"] == "closing" and reason["message"] == "image created"
    return reason["data"], frames[1:]


def layers(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.state_root / "layers").iterdir()}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    return rootfs.session_tarball(tmp_path_factory.mktemp("busybox"))


@pytest.fixture(scope="module")
def tree(tarball: Path) -> Path:
    return tarball.parent / "busybox-rootfs"


@pytest.fixture
def image(daemon, api, tarball) -> Iterator[str]:
    image_id, _ = create_ok(daemon, klee_config("fetch", url=rootfs.file_url(tarball)))
    yield image_id
    api.delete(f"/images/{image_id}")


# --- creation ---------------------------------------------------------------------------------


def test_fetch_file_url(daemon, api, tarball):
    before = layers(daemon)
    image_id, progress = create_ok(daemon, klee_config("fetch", url=rootfs.file_url(tarball), tag="bbfetch:1"))
    assert progress[:2] == ["Succesfully fetched base system.\n", "Unpacking contents and creating image...\n"]
    assert "Extracted 100 files...\n" in progress
    assert "Succesfully extracted binaries, creating image...\n" in progress
    image = api.get(f"/images/{image_id}/inspect").json()
    assert image["id"] == image_id and (image["name"], image["tag"]) == ("bbfetch", "1")
    assert (image["user"], image["cmd"], image["env"], image["instructions"]) == ("root", ["/bin/sh"], [], [])
    assert len(layers(daemon) - before) == 1
    layer = Path(image["dataset"])
    assert (layer / "bin/busybox").is_file() and os.readlink(layer / "bin/sh") == "/bin/busybox"
    assert (layer / "etc/resolv.conf").read_bytes() == Path("/etc/resolv.conf").read_bytes()  # dns defaults on
    assert api.get("/images/bbfetch:1/inspect").json() == image
    assert api.delete("/images/bbfetch:1").json() == {"id": "bbfetch:1"}
    assert layers(daemon) == before and not layer.exists()


def test_fetch_xz_and_zstd(daemon, api, tarball, tmp_path):
    xz = tmp_path / "busybox.tar.xz"
    xz.write_bytes(lzma.compress(_gunzip(tarball)))
    archives = [xz]
    if shutil.which("zstd"):
        zst = tmp_path / "busybox.tar.zst"
        (tmp_path / "plain.tar").write_bytes(_gunzip(tarball))
        subprocess.run(["zstd", "-q", str(tmp_path / "plain.tar"), "-o", str(zst)], check=True)
        archives.append(zst)
    for archive in archives:
        image_id, _ = create_ok(daemon, klee_config("fetch", url=rootfs.file_url(archive), dns=False))
        layer = Path(api.get(f"/images/{image_id}/inspect").json()["dataset"])
        assert (layer / "bin/busybox").is_file() and not (layer / "etc/resolv.conf").exists()
        assert api.delete(f"/images/{image_id}").status_code == 200


def _gunzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def test_dir_method_and_options(daemon, api, tree):
    image_id, progress = create_ok(daemon, {**klee_config("dir", dns=False, update=True), "path": str(tree)})
    assert progress[0] == f"Copying {tree} into the new image...\n"
    assert "'update' runs freebsd-update, which this host's images do not have: skipping...\n" in progress
    layer = Path(api.get(f"/images/{image_id}/inspect").json()["dataset"])
    assert (layer / "bin/busybox").read_bytes() == (tree / "bin/busybox").read_bytes()
    assert (layer / "home/user1").stat().st_uid == 1000
    assert not (layer / "etc/resolv.conf").exists()
    if os.path.exists("/etc/localtime"):
        assert (layer / "etc/localtime").read_bytes() == Path("/etc/localtime").read_bytes()
    else:
        assert "/etc/localtime not found on host, skipping...\n" in progress
    api.delete(f"/images/{image_id}")

    frames, code, reason = create(daemon, {**klee_config("dir"), "path": "relative/dir"})
    assert code == 1011 and reason["message"].startswith("image creation failed: method 'dir' needs 'path'")
    frames, code, reason = create(daemon, {**klee_config("dir"), "path": str(daemon.state_root.parent)})
    assert code == 1011 and "state directory" in frames[-1]


@pytest.mark.parametrize("method", ["zfs-copy", "zfs-clone"])
def test_zfs_methods_need_zfs(daemon, method):
    before = layers(daemon)
    frames, code, reason = create(daemon, klee_config(method, zfs_dataset="zroot/base"))
    expected = f"{method} needs the ZFS storage driver (this daemon uses overlay)"
    assert [json.loads(frames[0]), frames[1]] == [STARTING, expected] and len(frames) == 2
    assert code == 1011 and reason["msg_type"] == "error" and reason["data"] == ""
    assert ("image creation failed: " + expected).startswith(reason["message"])
    assert layers(daemon) == before


def test_bad_configs_close_1002_without_a_first_frame(daemon):
    frames, code, reason = create(daemon, {"method": "bogus"})
    assert (frames, code, reason["msg_type"]) == ([], 1002, "error")
    assert reason["message"].startswith("invalid parameters")
    frames, code, reason = create(daemon, "not json")
    assert (frames, code) == ([], 1002) and reason["message"].startswith("invalid json")
    frames, code, reason = create(daemon, klee_config("fetch", url="ftp://example.org/base.txz"))
    assert code == 1011 and "unsupported scheme 'ftp'" in frames[-1]
    frames, code, reason = create(daemon, klee_config("fetch", url="file:///nonexistent/base.txz"))
    assert code == 1011 and reason["message"].startswith("image creation failed: could not fetch file from url")


def test_fetch_auto(daemon, api):
    frames, code, reason = create(daemon, klee_config("fetch-auto", autotag=True), timeout=1800)
    if shutil.which("debootstrap") is None:
        assert code == 1011 and "debootstrap" in frames[-1]
        return
    assert code == 1000, frames[-5:]
    image = api.get(f"/images/{reason['data']}/inspect").json()
    assert image["tag"] == "latest" and image["name"].startswith(("debian-", "ubuntu-"))
    api.delete(f"/images/{image['id']}")


def test_hostile_tarballs_leave_nothing(daemon, api, tmp_path):
    sentinel = tmp_path / "host"
    sentinel.mkdir()
    before = layers(daemon)

    def archive(name: str, *members: tarfile.TarInfo) -> str:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for info in members:
                tar.addfile(info, _payload() if info.isreg() else None)
        return rootfs.file_url(path)

    dotdot = _info(f"../../../..{sentinel}/pwned")
    link = _info("shadow", tarfile.LNKTYPE, "/etc/shadow")
    for url in (archive("dotdot.tgz", dotdot), archive("hardlink.tgz", link)):
        frames, code, reason = create(daemon, klee_config("fetch", url=url))
        assert code == 1011 and reason["message"].startswith("image creation failed: refusing"), frames[-1]
    assert layers(daemon) == before  # the partial layers were removed

    escape = archive("symlink.tgz", _info("a", tarfile.SYMTYPE, str(sentinel)), _info("a/pwned"))
    image_id, _ = create_ok(daemon, klee_config("fetch", url=escape, dns=False, localtime=False))
    layer = Path(api.get(f"/images/{image_id}/inspect").json()["dataset"])
    assert (layer / str(sentinel).lstrip("/") / "pwned").read_bytes() == b"pwned\n"  # neutralised inside the layer
    assert list(sentinel.iterdir()) == []
    api.delete(f"/images/{image_id}")


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.REGTYPE:
        info.size = len(b"pwned\n")
    return info


def _payload() -> io.BytesIO:
    return io.BytesIO(b"pwned\n")


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends the headers and a little data of a large download, then stalls until released."""

    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(512 * 1024 * 1024))
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"\0" * 65536)
        self.wfile.flush()
        self.release.wait(30)

    def log_message(self, *args: Any) -> None:
        return None


def test_client_disconnect_cancels_and_cleans_up(daemon):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before, downloads = layers(daemon), daemon.state_root / "tmp"
    try:
        with unix_connect(str(daemon.socket), uri="ws://localhost/images/create") as ws:
            ws.send(json.dumps(klee_config("fetch", url=f"http://127.0.0.1:{server.server_port}/base.txz")))
            assert json.loads(ws.recv(timeout=10)) == STARTING
            assert ws.recv(timeout=10).startswith("Fetching http://127.0.0.1")
            assert len(layers(daemon) - before) == 1  # the layer being filled
        _wait_for(lambda: layers(daemon) == before and not any(downloads.glob("download-*")))
    finally:
        _StallingHandler.release.set()
        server.shutdown()
        server.server_close()


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --- REST -------------------------------------------------------------------------------------


def test_list_is_newest_first_and_complete(daemon, api, tarball):
    ids = [create_ok(daemon, klee_config("fetch", url=rootfs.file_url(tarball), dns=False))[0] for _ in range(2)]
    listed = api.get("/images/list").json()
    assert [i["id"] for i in listed if i["id"] in ids] == list(reversed(ids))
    for item in listed:
        assert {"id", "name", "tag", "cmd", "env", "user", "instructions", "created", "dataset"} <= set(item)
    for image_id in ids:
        api.delete(f"/images/{image_id}")


def test_inspect_and_tag(daemon, api, image, tarball):
    assert api.get("/images/notexist/inspect").json() == {"message": "image not found"}
    r = api.post("/images/notexist/tag", params={"nametag": "newtag:latest"})
    assert r.status_code == 404 and r.json() == {"message": "image not found"}
    r = api.post(f"/images/{image}/tag", params={"nametag": "imgtest:inspect"})
    assert r.status_code == 200 and r.json() == {"id": image}
    assert api.get("/images/imgtest:inspect/inspect").json()["id"] == image
    assert api.get("/images/imgtestlol:inspect/inspect").status_code == 404
    assert api.post(f"/images/{image[:6]}/tag", params={"nametag": "imgtest"}).json() == {"id": image}
    assert api.get("/images/imgtest/inspect").json()["tag"] == "latest"  # a bare name means :latest

    # only one image holds a name:tag: tagging another takes it away
    other, _ = create_ok(daemon, klee_config("fetch", url=rootfs.file_url(tarball), tag="imgtest:latest"))
    old = api.get(f"/images/{image}/inspect").json()
    assert (old["name"], old["tag"]) == ("", "")
    assert api.post(f"/images/{image}/tag", params={"nametag": "imgtest:latest"}).status_code == 200
    assert [api.get(f"/images/{i}/inspect").json()["name"] for i in (image, other)] == ["imgtest", ""]
    api.delete(f"/images/{other}")


def test_bad_references_are_4xx(api, image):
    for ident in ("a:b:c", "a@b@c"):
        r = api.get(f"/images/{ident}/inspect")
        assert r.status_code == 404 and "more than one" in r.json()["message"]
        assert api.delete(f"/images/{ident}").status_code == 404
    r = api.post(f"/images/{image}/tag", params={"nametag": "x:y:z"})
    assert r.status_code == 404 and "more than one ':'" in r.json()["message"]
    r = api.post(f"/images/{image}/tag")
    assert r.status_code == 422
    assert api.post("/images/prune").status_code == 422  # `all` is required


def test_remove_by_prefix_then_again(daemon, api, tarball):
    image_id, _ = create_ok(daemon, klee_config("fetch", url=rootfs.file_url(tarball), dns=False))
    layer = Path(api.get(f"/images/{image_id}/inspect").json()["dataset"])
    prefix = image_id[:8]
    r = api.delete(f"/images/{prefix}")
    assert r.status_code == 200 and r.json() == {"id": prefix}
    assert not layer.exists()
    r = api.delete(f"/images/{prefix}")
    assert r.status_code == 404 and r.json() == {"message": f"Error: No such image: {prefix}\n"}


def test_image_used_by_a_container(daemon, api, image):
    r = api.post("/containers/create", json={"image": image, "name": "imgtest-user", "cmd": ["/bin/true"],
                                             "network_driver": "host"})
    assert r.status_code == 201, r.text
    container = r.json()["id"]
    try:
        r = api.delete(f"/images/{image}")
        assert r.status_code == 404
        assert r.json()["message"] == f"could not remove image {image} since it is used for containers:\n{container}"
    finally:
        api.delete(f"/containers/{container}")


# --- prune ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_daemon() -> Iterator[Daemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-images-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


def test_prune_over_the_api(own_daemon, tarball):
    url = rootfs.file_url(tarball)
    tagged, _ = create_ok(own_daemon, klee_config("fetch", url=url, tag="keep:me", dns=False))
    untagged, _ = create_ok(own_daemon, klee_config("fetch", url=url, dns=False))
    with own_daemon.client() as api:
        r = api.post("/images/prune", params={"all": "false"})
        assert r.status_code == 200 and r.json() == [untagged]
        used, _ = create_ok(own_daemon, klee_config("fetch", url=url, dns=False))
        cid = api.post("/containers/create", json={"image": used, "cmd": ["/bin/true"], "network_driver": "host"})
        assert cid.status_code == 201, cid.text
        assert api.post("/images/prune", params={"all": "false"}).json() == []  # used: kept even untagged
        assert api.post("/images/prune", params={"all": "true"}).json() == [tagged]
        api.delete(f"/containers/{cid.json()['id']}")
        assert api.post("/images/prune", params={"all": "true"}).json() == [used]
        assert api.get("/images/list").json() == []
    assert layers(own_daemon) == set()


class _Chain:
    """Images + a real store and overlay storage in-process, for parent/child chains."""

    def __init__(self, root: Path) -> None:
        self.store = Store(root / "metadata.sqlite")
        self.storage = OverlayStorage(root)
        self.images = Images(self.store, self.storage)
        self.seq = 0

    async def image(self, name: str = "", tag: str = "", parent: ImageRecord | None = None) -> ImageRecord:
        self.seq += 1
        layer, path = await self.storage.create_layer()
        (path / f"file{self.seq}").write_text("x")
        record = ImageRecord(
            id=new_id(), name=name, tag=tag, cmd=["/bin/sh"], env=[], user="root", instructions=[],
            created=f"2030-01-01T00:00:{self.seq:02d}.000000Z", dataset=str(path),
            layers=[*(parent.layers if parent else []), layer], parent_id=parent.id if parent else "",
        )
        self.images.add(record)
        return record

    def use(self, image: ImageRecord) -> str:
        record = ContainerRecord(
            id=new_id(), name=None, image_id=image.id, cmd=None, user="", env=[], jail_param=[],
            network_driver="host", public_ports=[], restart_policy="no", persist=False,
            created="2030-01-01T00:00:00.000000Z", dataset="", layers=list(image.layers),
        )
        self.store.put(CONTAINER, record.id, record, name=None, created=record.created)
        return record.id


def test_prune_chains_in_process(tmp_path):
    require_root_runtime()

    async def scenario() -> None:
        chain = _Chain(tmp_path / "state")
        images = chain.images
        # all=false: untagged leaves go, repeatedly; tagged images and parents of tagged ones stay
        base = await chain.image("base", "1")
        tagged_child = await chain.image("child", "1", base)
        untagged_child = await chain.image(parent=base)
        untagged_parent = await chain.image()
        tagged_grandchild = await chain.image("gc", "1", await chain.image(parent=untagged_parent))
        lone_chain_top = await chain.image(parent=await chain.image())
        removed = await images.prune(False)
        assert set(removed) == {untagged_child.id, lone_chain_top.id, lone_chain_top.parent_id}
        assert removed.index(lone_chain_top.id) < removed.index(lone_chain_top.parent_id)  # child first
        assert {r.id for r in images.records()} >= {base.id, tagged_child.id, untagged_parent.id, tagged_grandchild.id}

        # remove refuses a parent, naming the children; shared layers survive a child's removal
        with pytest.raises(Exception, match=f"since it is used for images:\n{tagged_child.id}"):
            await images.remove(base.id)
        await images.remove(tagged_child.id)
        assert all(chain.storage.layer_path(layer).is_dir() for layer in base.layers)

        # all=true keeps images used by containers and their ancestors
        user = await chain.image("leaf", "1", base)
        chain.use(user)
        removed = await images.prune(True)
        assert {r.id for r in images.records()} == {base.id, user.id}
        assert tagged_grandchild.id in removed and untagged_parent.id in removed
        assert set(chain.storage.list_layers()) == set(user.layers)
        chain.store.close()

    trio.run(scenario)

