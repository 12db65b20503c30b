"""Volumes and bind mounts ("nullfs" on the wire) in containers."""

from __future__ import annotations

import secrets

import pytest

from tests.integration.test_containers import create, exec_create
from tests.wsapi import create_image, exec_stream


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon)


def mount(source: str, destination: str, *, read_only: bool = False, type_: str | None = None) -> dict:
    kind = type_ or ("nullfs" if source.startswith("/") else "volume")
    return {"type": kind, "source": source, "destination": destination, "read_only": read_only}


def run_in(api, daemon, image, cmd, mounts, **config):
    cid = create(api, image, cmd, mounts=mounts, **config)
    return cid, exec_stream(daemon, exec_create(api, cid))


def test_volume_is_auto_created_and_persists_between_containers(api, daemon, image):
    vol = f"auto{secrets.token_hex(3)}"
    first, stream = run_in(api, daemon, image, ["/bin/sh", "-c", "echo data > /mnt/file"], [mount(vol, "/mnt")])
    assert stream.close_reason["message"].endswith("exit-code 0")
    inspect = api.get(f"/volumes/{vol}/inspect").json()
    assert inspect["mountpoints"] == [{"type": "volume", "container_id": first, "destination": "/mnt",
                                       "source": vol, "read_only": False}]
    second, stream = run_in(api, daemon, image, ["/bin/cat", "/data/file"], [mount(vol, "/data", read_only=True)])
    assert stream.text == "data\n"
    c = api.get(f"/containers/{second}/inspect").json()
    assert c["container_mountpoints"][0]["read_only"] is True
    assert api.post("/volumes/prune").json().count(vol) == 0  # still in use
    for cid in (first, second):
        api.delete(f"/containers/{cid}")
    assert vol in api.post("/volumes/prune").json()


def test_new_volume_is_prefilled_from_the_image(api, daemon, image):
    vol = f"pre{secrets.token_hex(3)}"
    cid, stream = run_in(api, daemon, image, ["/bin/ls", "/etc"], [mount(vol, "/etc")])
    assert "passwd" in stream.text.split()
    path = api.get(f"/volumes/{vol}/inspect").json()["volume"]["mountpoint"]
    from pathlib import Path
    assert (Path(path) / "passwd").is_file()
    api.delete(f"/containers/{cid}")
    api.delete(f"/volumes/{vol}")


def test_read_only_volume_refuses_writes(api, daemon, image):
    vol = f"ro{secrets.token_hex(3)}"
    cid, stream = run_in(api, daemon, image, ["/bin/sh", "-c", "touch /v/x"], [mount(vol, "/v", read_only=True)])
    assert "Read-only file system" in stream.text
    assert not stream.close_reason["message"].endswith("exit-code 0")
    api.delete(f"/containers/{cid}")
    api.delete(f"/volumes/{vol}")


def test_bind_mounts_of_directories_and_files(api, daemon, image, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "hello").write_text("from host\n")
    (tmp_path / "single").write_text("just a file\n")
    mounts = [mount(str(tmp_path / "dir"), "/srv/deep/dir"), mount(str(tmp_path / "single"), "/etc/single",
                                                                   read_only=True)]
    cmd = ["/bin/sh", "-c", "cat /srv/deep/dir/hello /etc/single; echo back > /srv/deep/dir/out; "
           "echo x > /etc/single || echo refused"]
    cid = create(api, image, cmd, mounts=mounts)
    # stdout and stderr are separate pipes with no order between them, and busybox writes an
    # error in several writes: each stream is read on its own from the multiplexed frames.
    stream = exec_stream(daemon, exec_create(api, cid), multiplex=True)
    frames = [f for f in stream.frames[1:] if isinstance(f, bytes)]
    assert b"".join(f[1:] for f in frames if f[:1] == b"\x01") == b"from host\njust a file\nrefused\n"
    assert b"Read-only file system" in b"".join(f[1:] for f in frames if f[:1] == b"\x02")
    assert (tmp_path / "dir" / "out").read_text() == "back\n"
    assert (tmp_path / "single").read_text() == "just a file\n"
    api.delete(f"/containers/{cid}")


def test_missing_bind_source_is_a_create_error(api, image):
    r = api.post("/containers/create", json={"image": image, "network_driver": "host",
                                             "mounts": [mount("/nonexistent/path/x", "/x")]})
    assert r.status_code == 404 and "no such file or directory" in r.json()["message"]


def test_mount_destination_through_a_symlink_stays_inside_the_container(api, daemon, tmp_path):
    import shutil

    from tests.rootfs import session_rootfs
    from tests.wsapi import run_stream

    root = tmp_path / "rootfs"
    shutil.copytree(session_rootfs(daemon.workdir), root, symlinks=True)
    (root / "escape").symlink_to("/")
    (root / "up").symlink_to("../../../../../../..")
    made = run_stream(daemon, "/images/create", {"method": "dir", "path": str(root)})
    assert made.close_code == 1000, made
    linked = made.close_reason["data"]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "marker").write_text("m")
    host_victims = [tmp_path / "victim1", tmp_path / "victim2"]
    mounts = [mount(str(tmp_path / "src"), f"/escape{host_victims[0]}"),
              mount(str(tmp_path / "src"), f"/up{host_victims[1]}")]
    cid = create(api, linked, ["/bin/sh", "-c", f"cat {host_victims[0]}/marker {host_victims[1]}/marker"],
                 mounts=mounts)
    stream = exec_stream(daemon, exec_create(api, cid))
    assert stream.text == "mm"  # mounted where the container sees the links lead, inside its root
    assert not any(v.exists() for v in host_victims)
    api.delete(f"/containers/{cid}")
    api.delete(f"/images/{linked}")


def test_relative_destination_is_refused(api, image):
    r = api.post("/containers/create", json={"image": image, "network_driver": "host",
                                             "mounts": [mount("vol", "relative/path")]})
    assert r.status_code == 404 and "absolute" in r.json()["message"]


def test_removing_a_volume_a_container_mounts_is_refused(api, daemon, image):
    vol = f"busy{secrets.token_hex(3)}"
    cid = create(api, image, ["/bin/sleep", "1000"], mounts=[mount(vol, "/v")])
    exec_stream(daemon, exec_create(api, cid), attach=False)
    r = api.delete(f"/volumes/{vol}")
    assert r.status_code == 409 and cid in r.json()["message"]
    api.post(f"/containers/{cid}/stop")
    # Stopped, it still mounts the volume (as docker, unlike upstream): its data must be there at the next start.
    r = api.delete(f"/volumes/{vol}")
    assert r.status_code == 409 and r.json()["message"] == f"volume '{vol}' is in use by container(s): {cid}"
    assert vol not in api.post("/volumes/prune").json()
    assert api.delete(f"/containers/{cid}").status_code == 200
    assert api.delete(f"/volumes/{vol}").status_code == 200
