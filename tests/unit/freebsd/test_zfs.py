"""ZFS layout and command lines (platform/freebsd/zfs.py) against upstream's (freebsd-backend.md §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleened.platform.freebsd import zfs
from kleened.platform.freebsd.zfs import DatasetError, Layout

L = Layout("zroot/kleene")


def test_upstreams_layout():
    assert L.parents() == ["zroot/kleene", "zroot/kleene/image", "zroot/kleene/container", "zroot/kleene/volumes"]
    assert L.image("abc") == "zroot/kleene/image/abc"
    assert L.container("abc") == "zroot/kleene/container/abc"
    assert L.volume("db") == "zroot/kleene/volumes/db"
    assert L.owner("zroot/kleene/container/abc") == ("container", "abc")
    assert L.owner("zroot/kleene/image/abc@image") == ("image", "abc")
    assert L.owner("zroot/other/abc") is None


def test_every_command_line():
    assert zfs.create_argv(L.image("abc")) == ["zfs", "create", "zroot/kleene/image/abc"]
    assert zfs.snapshot_argv(L.image("abc"), "image") == ["zfs", "snapshot", "zroot/kleene/image/abc@image"]
    assert zfs.clone_argv("zroot/kleene/image/abc@image", L.container("c1")) == [
        "zfs", "clone", "zroot/kleene/image/abc@image", "zroot/kleene/container/c1"]
    assert zfs.rename_argv(L.container("b1"), L.image("b1")) == [
        "zfs", "rename", "-f", "zroot/kleene/container/b1", "zroot/kleene/image/b1"]
    assert zfs.destroy_argv(L.container("c1"), recursive=True, force=True) == [
        "zfs", "destroy", "-rf", "zroot/kleene/container/c1"]
    assert zfs.destroy_argv(L.image("abc"), recursive=True) == ["zfs", "destroy", "-r", "zroot/kleene/image/abc"]
    assert zfs.destroy_argv(L.volume("db")) == ["zfs", "destroy", "zroot/kleene/volumes/db"]
    assert zfs.promote_argv(L.image("b1")) == ["zfs", "promote", "zroot/kleene/image/b1"]
    assert zfs.send_argv("zroot/src@abc") == ["zfs", "send", "zroot/src@abc"]
    assert zfs.receive_argv(L.image("abc")) == ["zfs", "receive", "zroot/kleene/image/abc"]
    assert zfs.get_argv("zroot/kleene", "mountpoint") == ["zfs", "list", "-H", "-o", "mountpoint", "zroot/kleene"]
    assert zfs.snapshots_argv(L.image("abc")) == [
        "zfs", "list", "-H", "-o", "name,clones", "-t", "snapshot", "-r", "zroot/kleene/image/abc"]


def test_never_a_recursive_destroy_of_clones():
    """Image removal checks clones first; `-R` (which would take containers) is never produced."""
    for recursive in (False, True):
        for force in (False, True):
            assert "-R" not in " ".join(zfs.destroy_argv("x/y", recursive=recursive, force=force))


@pytest.mark.parametrize("bad", ["/zroot/src", "zroot/src; rm -rf /", "zroot//x", "zroot/../x", "", "zroot/a b",
                                 "-zroot", "zroot/x\n"])
def test_dataset_names_are_checked(bad):
    """Upstream passed `zfs list -H -o name <src>` through `sh -c` (B10); a leading `/` is upstream's
    `invalid dataset`."""
    with pytest.raises(DatasetError, match="invalid dataset"):
        zfs.check_dataset(bad)


@pytest.mark.parametrize("bad", ["a/b", "../x", ".hidden", "", "x" * 129, "x\n"])
def test_volume_names_are_one_component(bad):
    with pytest.raises(DatasetError):
        L.volume(bad)


@pytest.mark.parametrize("bad", ["a@b", "a/b", "", "x\n", "-x"])
def test_snapshot_names_are_one_component(bad):
    with pytest.raises(DatasetError, match="invalid snapshot name"):
        zfs.snapshot_argv("zroot/kleene/container/abc", bad)


@pytest.mark.parametrize("text", ["none\n", "legacy\n", "-\n", ""])
def test_mountpoints_that_cannot_hold_a_jail_are_refused(text):
    """B24: upstream's check of the root's mountpoint never fired."""
    with pytest.raises(DatasetError, match="kleened needs a mounted filesystem"):
        zfs.parse_mountpoint("zroot/kleene", text)


def test_mountpoint_is_what_zfs_says():
    """B8: not `/` + the dataset name."""
    assert zfs.parse_mountpoint("zroot/kleene", "/var/kleene\n") == Path("/var/kleene")


def test_dependents_and_the_message():
    text = ("zroot/kleene/image/abc@image\tzroot/kleene/container/c1,zroot/kleene/image/child\n"
            "zroot/kleene/image/abc@5d41402abc4b\tzroot/kleene/container/c2\n"
            "zroot/kleene/image/abc/sub@x\tzroot/kleene/container/c3\n"
            "zroot/kleene/image/abc@unused\t-\n")
    clones = zfs.parse_clones(text)
    assert zfs.snapshot_names(L.image("abc"), clones) == ["image", "5d41402abc4b", "unused"]
    assert zfs.dependents(L, L.image("abc"), clones) == (["c1", "c2"], ["child"])
    assert zfs.in_use_message("abc", ["c1", "c2"], ["child"]) == (
        "could not remove image abc since it is used for containers:\nc1\nc2")
    assert zfs.in_use_message("abc", [], ["child"]) == "could not remove image abc since it is used for images:\nchild"


def test_the_heir_is_a_clone_of_the_latest_cloned_snapshot():
    """Promoting it moves every earlier snapshot with it; clones inside the dataset do not count."""
    stage = L.container("s0")
    text = (f"{stage}@aaaaaaaaaaaa\t{L.container('s1')}\n"
            f"{stage}@bbbbbbbbbbbb\t{L.image('img')},{L.container('s2')}\n"
            f"{stage}@cccccccccccc\t-\n"
            f"{stage}/sub@dddddddddddd\t{stage}/other\n")
    assert zfs.heir(stage, zfs.parse_clones(text)) == L.container("s2")
    assert zfs.heir(stage, zfs.parse_clones(f"{stage}@aaaaaaaaaaaa\t-\n")) is None
    assert zfs.heir(stage, zfs.parse_clones(f"{stage}@x\t{stage}/inner\n")) is None


def test_children():
    text = "zroot/kleene/volumes\nzroot/kleene/volumes/db\nzroot/kleene/volumes/web\n"
    assert zfs.parse_children("zroot/kleene/volumes", text) == ["db", "web"]
