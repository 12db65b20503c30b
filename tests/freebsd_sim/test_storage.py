"""ZfsStorage (and FreeBSDRootfs) against the SIMULATED FreeBSD host: base images, build
snapshots, clones, zfs-copy/zfs-clone and volumes, in upstream's dataset layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleene_protocol.ids import new_id
from kleene_protocol.models import ImageCreateConfig
from kleened.core.image_create import CreationFailed, create_image
from kleened.platform.freebsd.zfs import DatasetError
from tests import rootfs
from tests.freebsd_sim.conftest import ROOT_DATASET, Drivers, run
from tests.freebsd_sim.host import SimHost


def test_prepare_honours_dry_run(sim: SimHost, drivers: Drivers):
    """B24: upstream's `dryinit` created the datasets too. (The fixture has prepared them already.)"""
    assert run(drivers.storage.prepare) == []
    sim.ok("zfs", "destroy", f"{ROOT_DATASET}/volumes")
    assert run(lambda: drivers.storage.prepare(dry_run=True)) == [f"{ROOT_DATASET}/volumes"]
    assert f"{ROOT_DATASET}/volumes" not in sim.datasets()
    assert run(drivers.storage.prepare) == [f"{ROOT_DATASET}/volumes"]


def test_fetch_a_tarball_into_an_image_dataset(sim: SimHost, drivers: Drivers):
    """Core's image creation (`fetch`) on the ZFS driver: the layer is a dataset, sealed with @image by core."""
    records, lines = [], []

    async def emit(text: str) -> None:
        lines.append(text)

    async def body() -> None:
        config = ImageCreateConfig(method="fetch", url=rootfs.file_url(drivers.tarball), tag="base:1",
                                   dns=False, localtime=False)
        await create_image(config, storage=drivers.storage, source=drivers.rootfs, add=records.append, emit=emit)

    run(body)
    image = records[0].layers[0]
    assert f"{ROOT_DATASET}/image/{image}" in sim.datasets()
    assert sim.snapshots() == [f"{ROOT_DATASET}/image/{image}@image"]
    assert (sim.mountpoint(f"{ROOT_DATASET}/image/{image}") / "bin/busybox").is_file()
    assert "Succesfully extracted binaries, creating image...\n" in lines


def test_a_failed_fetch_leaves_no_dataset(sim: SimHost, drivers: Drivers, tmp_path: Path):
    """B11: upstream leaked the dataset (and its shared tarball) when a step after `zfs create` failed."""
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not a tarball")
    config = ImageCreateConfig(method="fetch", url=rootfs.file_url(bad), tag="x", dns=False, localtime=False)

    async def body() -> None:
        await create_image(config, storage=drivers.storage, source=drivers.rootfs, add=lambda r: None,
                           emit=lambda _t: trio_noop())

    with pytest.raises(CreationFailed):
        run(body)
    assert run(drivers.storage.list_images) == []


async def trio_noop() -> None:
    return None


def test_build_snapshots_clones_and_image_in_use(sim: SimHost, drivers: Drivers):
    async def body() -> None:
        base = await drivers.image()
        builder = new_id()
        root = await drivers.storage.create_container_fs(builder, base)
        (root / "step1").write_text("one")
        first = await drivers.storage.snapshot_container(builder, new_id())
        (root / "step2").write_text("two")
        second = await drivers.storage.snapshot_container(builder, new_id())
        built = new_id()
        image_root = await drivers.storage.commit_build(builder, built)  # rename -f, then @image
        assert (image_root / "step2").read_text() == "two"
        assert await drivers.storage.snapshots(built) == [first, second, "image"]  # step snapshots moved along
        assert await drivers.storage.list_container_fs() == []
        older = await drivers.storage.create_container_fs("c1", built, first)  # FROM image@snap
        assert (older / "step1").exists() and not (older / "step2").exists()
        with pytest.raises(DatasetError, match=f"could not remove image {built} since it is used for containers:\nc1"):
            await drivers.storage.remove_image(built)
        with pytest.raises(DatasetError, match=f"since it is used for images:\n{built}"):
            await drivers.storage.remove_image(base)
        await drivers.storage.remove_container_fs("c1")
        await drivers.storage.remove_image(built)
        await drivers.storage.remove_image(base)
        await drivers.storage.remove_image(base)  # idempotent

    run(body)
    assert sim.datasets() == ["zroot", *[f"{ROOT_DATASET}{s}" for s in ("", "/container", "/image", "/volumes")]]
    assert sim.snapshots() == []


def test_zfs_copy_and_zfs_clone_leave_no_snapshots_behind(sim: SimHost, drivers: Drivers):
    """B13: zfs-copy left `@<id>` on both datasets, zfs-clone left its origin after the image was removed.
    B10: send | receive are two processes, not `sh -c`."""
    sim.ok("zfs", "create", "zroot/src")
    (sim.mountpoint("zroot/src") / "world").write_text("made with make world")

    async def body() -> None:
        copied, cloned = new_id(), new_id()
        path = await drivers.storage.copy_dataset("zroot/src", copied)
        assert (path / "world").read_text() == "made with make world"
        assert sim.snapshots() == []  # neither src@<id> nor image@<id> remains
        await drivers.storage.seal_layer(copied)
        path = await drivers.storage.clone_dataset("zroot/src", cloned)
        assert (path / "world").exists()
        assert f"zroot/src@{cloned}" in sim.snapshots()  # the clone needs its origin while it exists
        await drivers.storage.remove_image(cloned)
        await drivers.storage.remove_image(copied)
        assert sim.snapshots() == []
        for bad in ("/zroot/src", "zroot/missing", "zroot/src;reboot"):
            with pytest.raises(DatasetError, match="invalid dataset"):
                await drivers.storage.copy_dataset(bad, new_id())

    run(body)
    sim.ok("zfs", "destroy", "zroot/src")


def test_volumes(sim: SimHost, drivers: Drivers, tmp_path: Path):
    source = tmp_path / "content"
    (source / "sub").mkdir(parents=True)
    (source / ".hidden").write_text("dotfiles too")  # upstream's `cp -a src/*` skipped them
    (source / "sub/file").write_text("x")

    async def body() -> None:
        path = await drivers.storage.create_volume("db")
        assert path == await drivers.storage.create_volume("db")  # idempotent, as upstream
        assert drivers.storage.dataset("db") == f"{ROOT_DATASET}/volumes/db"
        await drivers.storage.populate_volume("db", source)
        assert (path / ".hidden").read_text() == "dotfiles too" and (path / "sub/file").exists()
        assert await drivers.storage.list_volumes() == ["db"]
        with pytest.raises(DatasetError):
            await drivers.storage.create_volume("a/b")  # upstream nested a dataset
        await drivers.storage.remove_volume("db")
        assert await drivers.storage.list_volumes() == []

    run(body)
