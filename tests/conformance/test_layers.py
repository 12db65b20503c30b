"""`LayerStorage` conformance where overlay and ZFS share the interface: a base layer made and
sealed, container filesystems stacked on it, a commit (a build step) and `finish_build`, a layer
in use refused, removal, start-up cleanup, and what the capabilities promise. Runs against every
backend of conftest.py (ZFS datasets, snapshots and clones on a SIMULATED host in CI).

Where the drivers differ on purpose (`capabilities`):
- CLONE_AT_CREATE (ZFS): the filesystem holds the image from create on and mounting does
  nothing; overlay composes the layers at mount, so before it the root is empty;
- a layer in use: overlay refuses to remove a layer a *mounted* container filesystem stacks (core
  refuses the rest: "image in use"); ZFS refuses while any clone depends on it, mounted or not
  (a ZFS container filesystem is always mounted), so only the mounted case is shared;
- image import by dataset (SEND: zfs-copy, zfs-clone) is ZfsStorage's, outside this interface.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kleene_protocol.ids import new_id
from kleened.platform.base import Capability, HostCommandError
from tests.conformance.conftest import Backend
from tests.freebsd_sim.conftest import run


def test_a_build_on_a_sealed_layer_then_removal(backend: Backend):
    layers = backend.layers
    builder, reader, plain = new_id(), new_id(), new_id()
    image_id = new_id()

    async def body() -> dict[str, object]:
        seen: dict[str, object] = {"before": backend.stored()}
        base = await backend.base_layer()
        seen["base_listed"] = base in layers.list_layers()
        seen["base_files"] = (layers.layer_path(base) / "bin" / "busybox").is_file()

        await layers.create_container_fs(builder, [base])
        root = layers.rootfs_path(builder)
        seen["at_create"] = (root / "bin" / "busybox").exists()
        assert await layers.mount_container_fs(builder, [base]) == root
        seen["mounted"] = builder in layers.mounted_container_fs()
        (root / "etc" / "step").write_text("built\n")
        (root / "etc" / "hostname").unlink()  # a deletion is part of the step too
        await layers.unmount_container_fs(builder)
        step = await layers.commit_container_fs(builder, new_id())  # a build step
        seen["step_listed"] = step in layers.list_layers() and step != base
        # the builder goes on from its step, as core's next build step does
        root = await layers.mount_container_fs(builder, [base, step])
        seen["builder_after_commit"] = (root / "etc" / "step").read_text()
        await layers.unmount_container_fs(builder)
        await layers.finish_build(builder, image_id)
        await layers.remove_container_fs(builder)  # core's discard of the build container
        await layers.remove_container_fs(builder)  # idempotent

        await layers.create_container_fs(reader, [base, step])
        root = await layers.mount_container_fs(reader, [base, step])
        seen["reader"] = ((root / "etc" / "step").read_text(), (root / "etc" / "hostname").exists())
        (root / "etc" / "step").write_text("changed in a container\n")
        await layers.create_container_fs(plain, [base])
        root = await layers.mount_container_fs(plain, [base])
        seen["plain"] = ((root / "etc" / "step").exists(), (root / "etc" / "hostname").exists())
        with pytest.raises((OSError, HostCommandError)):  # `reader` is mounted on it
            await layers.remove_layer(step)
        seen["in_use_kept"] = step in layers.list_layers()
        with pytest.raises((OSError, HostCommandError, FileExistsError)):  # one filesystem per id
            await layers.create_container_fs(reader, [base])
        seen["reader_after_refusals"] = (layers.rootfs_path(reader) / "etc" / "step").read_text()

        for cid in (reader, plain):
            await layers.unmount_container_fs(cid)
            await layers.remove_container_fs(cid)
        seen["containers_left"] = [c for c in layers.list_container_fs() if c in (builder, reader, plain)]
        await layers.remove_layer(step)
        await layers.remove_layer(step)  # idempotent
        await layers.remove_layer(base)
        seen["layers_left"] = [layer for layer in layers.list_layers() if layer in (base, step)]
        seen["after"] = backend.stored()
        return seen

    seen = run(body)
    assert seen["base_listed"] and seen["base_files"]
    assert seen["at_create"] == (Capability.CLONE_AT_CREATE in backend.layers.capabilities)
    assert seen["mounted"] and seen["step_listed"]
    assert seen["builder_after_commit"] == "built\n"
    assert seen["reader"] == ("built\n", False)
    assert seen["plain"] == (False, True)  # a container from the base alone does not see the step
    assert seen["in_use_kept"]
    assert seen["reader_after_refusals"] == "changed in a container\n"
    assert seen["containers_left"] == [] and seen["layers_left"] == []
    assert seen["after"] == seen["before"], "the storage left objects on the host"


def test_startup_cleanup_keeps_only_what_it_is_told(backend: Backend):
    """At start-up (no container running): the filesystems of `keep` stay with their content,
    the others go; nothing is running, so every filesystem may be unmounted."""
    layers = backend.layers
    kept, orphan = new_id(), new_id()

    async def body() -> tuple[list[str], list[Path], Path, bool]:
        base = await backend.base_layer()
        for cid in (kept, orphan):
            await layers.create_container_fs(cid, [base])
            await layers.mount_container_fs(cid, [base])
        (layers.rootfs_path(kept) / "mine").write_text("kept\n")
        orphan_root = layers.rootfs_path(orphan)
        removed = await layers.cleanup(keep=[kept])
        listed = layers.list_container_fs()
        root = await layers.mount_container_fs(kept, [base])
        content = (root / "mine").read_text() == "kept\n"
        await layers.unmount_container_fs(kept)
        await layers.remove_container_fs(kept)
        await layers.remove_layer(base)
        return listed, removed, orphan_root, content

    listed, removed, orphan_root, content = run(body)
    assert kept in listed and orphan not in listed
    assert [p for p in removed if orphan in str(p)] and content
    assert not orphan_root.exists()
