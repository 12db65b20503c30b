"""OverlayStorage on the real kernel: mounts, commit as a layer, whiteouts, safe removal, volumes."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from kleened.platform.linux import mountinfo
from tests.integration.platform.conftest import Host, run


def test_mount_commit_and_whiteouts(host: Host) -> None:
    st = host.storage

    async def body() -> None:
        cid = host.new_id()
        await st.create_container_fs(cid)
        try:
            root = await st.mount_container_fs(cid, [host.base])
            assert st.mounted_container_fs() == [cid]
            assert (root / "bin/busybox").is_file()
            # write, delete and replace through the mount
            (root / "newfile").write_text("new\n")
            (root / "bin/ls").unlink()
            (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
            with pytest.raises(OSError) as busy:
                await st.commit_container_fs(cid, host.new_id())
            assert busy.value.errno == errno.EBUSY
            await st.unmount_container_fs(cid)
            await st.unmount_container_fs(cid)  # idempotent
            assert st.mounted_container_fs() == []

            layer = await st.commit_container_fs(cid, host.new_id())
            lpath = st.layer_path(layer)
            assert (lpath / "newfile").read_text() == "new\n"
            whiteout = os.lstat(lpath / "bin/ls")
            assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0  # overlay whiteout: char 0/0
            assert layer in st.list_layers()

            # the container's writable layer starts empty again, on top of the new stack
            root = await st.mount_container_fs(cid, [host.base, layer])
            assert not (root / "bin/ls").exists() and (root / "bin/cat").exists()
            assert (root / "newfile").read_text() == "new\n"
            assert (root / "etc/passwd").read_text().startswith("root:x:0:0::")
            assert os.listdir(st.containers / cid / "upper") == []

            with pytest.raises(OSError) as in_use:
                await st.remove_layer(layer)
            assert in_use.value.errno == errno.EBUSY
        finally:
            await st.remove_container_fs(cid)  # mounted: unmounts first
        assert (st.layer_path(host.base) / "bin/ls").is_symlink(), "the lower layer must be untouched"
        await st.remove_layer(layer)
        await st.remove_layer(layer)  # idempotent
        assert layer not in st.list_layers()

    run(body)


def test_cleanup_gives_a_commit_killed_between_its_renames_its_upper_back(host: Host) -> None:
    """The state a kill -9 leaves between the commit's two renames (the writable layer moved to
    the new layer, the fresh upper still `.tmp-upper-<layer>`): start-up's cleanup makes the
    fresh one the upper, and the files are in the layer, which a stack naming it shows."""
    st = host.storage
    cid, layer = host.new_id(), host.new_id()

    async def body() -> tuple[list[str], str, list[str]]:
        await st.create_container_fs(cid)
        try:
            root = await st.mount_container_fs(cid, [host.base])
            (root / "made").write_text("before the crash\n")
            await st.unmount_container_fs(cid)
            cdir = st.containers / cid
            (cdir / f".tmp-upper-{layer}").mkdir(mode=0o755)
            (cdir / "upper").rename(st.layer_path(layer))
            await st.cleanup(keep=[cid])
            upper = sorted(os.listdir(cdir / "upper"))
            root = await st.mount_container_fs(cid, [host.base, layer])
            return upper, (root / "made").read_text(), sorted(p.name for p in cdir.glob(".tmp-*"))
        finally:
            await st.remove_container_fs(cid)
            await st.remove_layer(layer)

    upper, made, leftovers = run(body)
    assert upper == [] and leftovers == []
    assert made == "before the crash\n"


def test_remove_mounted_container_keeps_lower_data(host: Host) -> None:
    st = host.storage

    async def body() -> None:
        before = sorted(os.listdir(st.layer_path(host.base) / "bin"))
        cid = host.new_id()
        await st.create_container_fs(cid)
        root = await st.mount_container_fs(cid, [host.base])
        assert mountinfo.is_mountpoint(root)
        (root / "bin/extra").write_text("x")
        await st.remove_container_fs(cid)
        assert cid not in st.list_container_fs()
        assert sorted(os.listdir(st.layer_path(host.base) / "bin")) == before

    run(body)


def test_empty_stack_and_many_layers(host: Host) -> None:
    st = host.storage

    async def body() -> None:
        cid = host.new_id()
        await st.create_container_fs(cid)
        layers = []
        try:
            root = await st.mount_container_fs(cid, [])
            assert os.listdir(root) == [".init"]  # only the init layer's placeholder
            (root / "x").write_text("x")
            await st.unmount_container_fs(cid)
            # 150 layers: absolute lowerdir paths would overflow the one-page mount data here
            for i in range(150):
                layer_id, path = await st.create_layer()
                (path / f"f{i}").write_text(str(i))
                layers.append(layer_id)
            root = await st.mount_container_fs(cid, layers)
            assert len(os.listdir(root)) == 152  # f0..f149, x, .init
        finally:
            await st.remove_container_fs(cid)
            for layer_id in layers:
                await st.remove_layer(layer_id)

    run(body)


def test_create_container_fs_twice_is_refused(host: Host) -> None:
    st = host.storage

    async def body() -> None:
        cid = host.new_id()
        await st.create_container_fs(cid)
        try:
            with pytest.raises(FileExistsError):
                await st.create_container_fs(cid)
        finally:
            await st.remove_container_fs(cid)
        await st.remove_container_fs(cid)  # idempotent

    run(body)


def test_volumes(host: Host) -> None:
    st = host.storage

    async def body() -> None:
        name = f"vol-{host.new_id()}"
        path = await st.create_volume(name)
        assert path == st.volume_path(name) and path.is_dir()
        assert st.dataset(name) == str(path)
        (path / "data").write_text("keep")
        assert await st.create_volume(name) == path  # idempotent, content kept
        assert (path / "data").read_text() == "keep"
        assert name in await st.list_volumes()
        await st.remove_volume(name)
        await st.remove_volume(name)
        assert name not in await st.list_volumes() and not path.exists()

    run(body)


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../x", "x\0y"])
def test_volume_names_must_be_one_safe_component(tmp_path, name: str) -> None:
    from kleened.platform.linux.overlay import check_volume_name

    with pytest.raises(ValueError, match="volume name"):
        check_volume_name(name)


@pytest.mark.parametrize("bad", ["", "a,b", "a:b", "../x", ".x", "a/b", "a=b"])
def test_ids_that_would_break_mount_options_are_refused(host: Host, bad: str) -> None:
    with pytest.raises(ValueError):
        host.storage.layer_path(bad)


def test_populate_volume_copies_owners_modes_and_links(host: Host) -> None:
    st = host.storage

    async def body() -> None:
        cid, name = host.new_id(), f"vol-{host.new_id()}"
        await st.create_container_fs(cid)
        try:
            root = await st.mount_container_fs(cid, [host.base])
            assert st.rootfs_path(cid) == root
            src = root / "srv"
            (src / "sub").mkdir(parents=True)
            (src / "sub/file").write_text("data")
            os.chown(src / "sub/file", 1000, 1000)
            os.chmod(src / "sub", 0o750)
            (src / "link").symlink_to("/etc/passwd")  # must stay a link, not the host's file
            path = await st.create_volume(name)
            await st.populate_volume(name, src)
            assert (path / "sub/file").read_text() == "data"
            assert os.stat(path / "sub/file").st_uid == 1000
            assert stat.S_IMODE(os.stat(path / "sub").st_mode) == 0o750
            assert os.readlink(path / "link") == "/etc/passwd"
            (root / "srvlink").symlink_to("srv")
            with pytest.raises(NotADirectoryError):
                await st.populate_volume(name, root / "srvlink")
        finally:
            await st.remove_container_fs(cid)
            await st.remove_volume(name)

    run(body)


def test_rootfs_tarball(host: Host) -> None:
    import tarfile

    from tests import rootfs

    tarball = rootfs.session_tarball(host.workdir)
    assert rootfs.session_tarball(host.workdir) == tarball  # cached per session
    assert rootfs.file_url(tarball).startswith("file:///")
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["./tmp"].mode == 0o1777
    assert members["./bin/sh"].issym() and members["./bin/sh"].linkname == "/bin/busybox"
    assert members["./home/user1"].uid == 1000
    assert "user1:x:1000:1000" in (host.workdir / "busybox-rootfs/etc/passwd").read_text()
