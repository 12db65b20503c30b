"""nullfs mount plans (platform/freebsd/mounts.py): destinations resolved inside the jail root (B9),
unmounts deepest first (B21), upstream's source messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kleened.platform.freebsd import mounts
from kleened.platform.freebsd.mounts import Mounted, MountError


def test_a_symlink_in_the_image_cannot_send_the_mount_to_the_host(tmp_path: Path):
    """B9: upstream mounted on `<root>/data`, which an image link `/data -> /etc` sent to the host's /etc."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "data").symlink_to("/etc")
    src = tmp_path / "src"
    src.mkdir()
    plan = mounts.prepare(root, src, "/data/conf", read_only=True)
    assert plan.target == root / "etc" / "conf"
    assert plan.target.is_dir() and not plan.target.is_symlink()
    assert mounts.mount_argv(plan) == ["mount_nullfs", "-o", "ro", str(src), str(root / "etc" / "conf")]


def test_dotdot_stays_in_the_root(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "f").write_text("x")
    plan = mounts.prepare(root, tmp_path / "f", "/../../../etc/passwd")
    assert plan.target == root / "etc" / "passwd" and plan.target.is_file()  # a file source gets a file target
    assert mounts.mount_argv(plan) == ["mount_nullfs", str(tmp_path / "f"), str(root / "etc" / "passwd")]


def test_upstreams_source_messages(tmp_path: Path):
    with pytest.raises(MountError, match="error ocurred while determining source type: No such file"):
        mounts.prepare(tmp_path, tmp_path / "missing", "/x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(MountError, match="could not determine source type, must be either directory or regular file"):
        mounts.prepare(tmp_path, tmp_path / "fifo", "/x")


def test_mount_table_and_unmount_order():
    text = ("zroot/ROOT/default\t/\tzfs\trw\t0 0\n"
            "zroot/kleene/container/c1\t/zroot/kleene/container/c1\tzfs\trw\t0 0\n"
            "devfs\t/zroot/kleene/container/c1/dev\tdevfs\trw\t0 0\n"
            "/data/vol\t/zroot/kleene/container/c1/srv\tnullfs\trw\t0 0\n"
            "/data/sub\t/zroot/kleene/container/c1/srv/inner\tnullfs\tro\t0 0\n"
            "/my\\040dir\t/zroot/kleene/container/c10/x\tnullfs\trw\t0 0\n")
    table = mounts.parse_mount_p(text)
    assert table[5] == Mounted("/my dir", "/zroot/kleene/container/c10/x", "nullfs")
    nodes = [m.node for m in mounts.under(table, "/zroot/kleene/container/c1")]
    assert nodes == ["/zroot/kleene/container/c1/srv/inner", "/zroot/kleene/container/c1/srv",
                     "/zroot/kleene/container/c1/dev"]  # deepest first (B21); c10 is not under c1
    # and never the container's own dataset, mounted at the root itself
    assert mounts.is_mounted(table, "/zroot/kleene/container/c1/dev", "devfs")
    assert mounts.umount_argv("/x") == ["umount", "/x"]
