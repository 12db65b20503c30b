"""Hostile archives against the layer extractor: each is refused or neutralised, and nothing is
written outside the root. The archives are built in memory; no root privileges needed."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from kleened.platform.posix.rootfs import copy_host_file, copy_tree
from kleened.platform.posix.tar import (
    PROGRESS_EVERY,
    ExtractError,
    Limits,
    UnsafeArchive,
    extract,
    resolve_in_root,
)


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    """A root to extract into, with a sentinel directory beside it standing for the host."""
    root, host = tmp_path / "root", tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "passwd").write_text("host secret\n")
    return {"root": root, "host": host, "tmp": tmp_path}


def host_untouched(box: dict[str, Path]) -> None:
    assert sorted(p.name for p in box["host"].iterdir()) == ["passwd"]
    assert (box["host"] / "passwd").read_text() == "host secret\n"
    outside = {p.name for p in box["tmp"].iterdir()} - {"root", "host", "a.tar.gz", "a.tar", "a.tar.xz", "a.tar.zst"}
    assert outside == set()


def test_plain_rootfs_round_trip(box):
    members = [
        _dir("./"), _dir("./bin"), _file("./bin/tool", b"#!/bin/sh\n", 0o4755), _link("./sbin", "bin"),
        _link("./etc/localtime", "/usr/share/zoneinfo/UTC"), _link("./bin/tool2", "bin/tool", tarfile.LNKTYPE),
        _dir("./tmp", 0o1777),
    ]
    stats = extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    root = box["root"]
    assert stats.entries == 6 and stats.skipped == 0  # the root entry itself is not counted
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o4755  # setuid kept: it is a rootfs
    assert os.readlink(root / "sbin") == "bin"
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"  # absolute links stay verbatim
    assert (root / "bin/tool2").stat().st_ino == (root / "bin/tool").stat().st_ino
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777


def test_dotdot_member_is_refused(box):
    with pytest.raises(UnsafeArchive, match=r"'\.\.'"):
        extract(make_tar(box["tmp"] / "a.tar.gz", [_file("../../etc/x"), _file("../host/passwd", b"pwned")]),
                box["root"])
    host_untouched(box)


def test_absolute_member_is_made_relative(box):
    extract(make_tar(box["tmp"] / "a.tar.gz", [_file(f"{box['host']}/passwd", b"pwned")]), box["root"])
    host_untouched(box)
    assert (box["root"] / str(box["host"]).lstrip("/") / "passwd").read_bytes() == b"pwned"


def test_write_through_absolute_symlink_stays_inside(box):
    archive = make_tar(box["tmp"] / "a.tar.gz", [_link("a", str(box["host"])), _file("a/passwd", b"pwned")])
    extract(archive, box["root"])
    host_untouched(box)
    # `a` points at the host directory's path, which inside the root is <root>/<that path>
    assert (box["root"] / str(box["host"]).lstrip("/") / "passwd").read_bytes() == b"pwned"
    assert os.readlink(box["root"] / "a") == str(box["host"])


def test_write_through_relative_symlink_escape_is_clamped(box):
    archive = make_tar(box["tmp"] / "a.tar.gz", [_link("a", "../../../../host"), _file("a/passwd", b"pwned")])
    extract(archive, box["root"])
    host_untouched(box)
    assert (box["root"] / "host/passwd").read_bytes() == b"pwned"


def test_symlink_chain_escape_is_clamped(box):
    members = [_dir("d"), _link("d/up", ".."), _link("l1", "d/up/d/up/.."), _link("l2", "l1/../.."),
               _file("l2/host/passwd", b"pwned"), _file("l1/x", b"x")]
    extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    host_untouched(box)
    assert (box["root"] / "host/passwd").read_bytes() == b"pwned"
    assert (box["root"] / "x").read_bytes() == b"x"


def test_symlink_loop_is_refused(box):
    members = [_link("a", "b"), _link("b", "a"), _file("a/x")]
    with pytest.raises(UnsafeArchive, match="symbolic links"):
        extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    host_untouched(box)


def test_final_symlink_is_replaced_not_followed(box):
    victim = box["host"] / "passwd"
    members = [_link("etc/passwd", str(victim)), _file("etc/passwd", b"image passwd\n")]
    extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    host_untouched(box)
    assert not (box["root"] / "etc/passwd").is_symlink()
    assert (box["root"] / "etc/passwd").read_bytes() == b"image passwd\n"


def test_whatever_is_there_is_replaced(box):
    """Entries are created first and what is in the way removed only then: a file, a symlink (to
    the host), a directory with content and a dangling symlink all give way, nothing is followed."""
    members = [_file("a", b"old"), _link("a", str(box["host"] / "passwd")),
               _link("b", str(box["host"])), _file("b", b"file over a link to a directory\n"),
               _dir("c"), _file("c/inner"), _link("c", "/nowhere"),
               _link("d", "/dangling"), _link("d", "/elsewhere"), _dir("e"), _file("e", b"file over a directory")]
    extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    host_untouched(box)
    root = box["root"]
    assert os.readlink(root / "a") == str(box["host"] / "passwd")
    assert not (root / "b").is_symlink() and (root / "b").read_bytes() == b"file over a link to a directory\n"
    assert os.readlink(root / "c") == "/nowhere" and os.readlink(root / "d") == "/elsewhere"
    assert (root / "e").read_bytes() == b"file over a directory"


def test_hardlink_outside_is_refused(box):
    for target in ("/etc/shadow", f"{box['host']}/passwd", "../host/passwd"):
        with pytest.raises(UnsafeArchive):
            extract(make_tar(box["tmp"] / "a.tar.gz", [_link("shadow", target, tarfile.LNKTYPE)]), box["root"])
    host_untouched(box)
    assert not (box["root"] / "shadow").exists()


def test_hardlink_through_symlinked_parent_stays_inside(box):
    members = [_link("h", str(box["host"])), _link("stolen", "h/passwd", tarfile.LNKTYPE)]
    with pytest.raises(UnsafeArchive, match="not in the archive"):
        extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    host_untouched(box)


def test_devices_and_fifos_are_skipped(box):
    dev = tarfile.TarInfo("dev/sda")
    dev.type, dev.devmajor, dev.devminor = tarfile.BLKTYPE, 8, 0
    chr_ = tarfile.TarInfo("dev/mem")
    chr_.type, chr_.devmajor, chr_.devminor = tarfile.CHRTYPE, 1, 1
    fifo = tarfile.TarInfo("run/fifo")
    fifo.type = tarfile.FIFOTYPE
    stats = extract(make_tar(box["tmp"] / "a.tar.gz", [(dev, None), (chr_, None), (fifo, None), _file("ok")]),
                    box["root"])
    assert stats.skipped == 3 and stats.entries == 1
    assert not (box["root"] / "dev/sda").exists() and not (box["root"] / "dev/mem").exists()
    assert not (box["root"] / "run/fifo").exists()


def test_size_cap(box):
    members = [_file("a", b"x" * 600), _file("b", b"y" * 600)]
    with pytest.raises(UnsafeArchive, match="larger than 1000 bytes"):
        extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"], limits=Limits(max_bytes=1000))
    assert not (box["root"] / "b").exists()
    host_untouched(box)


def test_member_count_cap(box):
    members = [_file(f"f{i}") for i in range(5)]
    with pytest.raises(UnsafeArchive, match="more than 3 entries"):
        extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"], limits=Limits(max_members=3))


@pytest.mark.parametrize("mode, name", [("w:xz", "a.tar.xz"), ("w", "a.tar"), ("w:gz", "a.tar.gz")])
def test_compressions(box, mode, name):
    archive = make_tar(box["tmp"] / name, [_file("etc/hostname", b"box\n")], mode)
    extract(archive, box["root"])
    assert (box["root"] / "etc/hostname").read_bytes() == b"box\n"


def test_zstd(box):
    if shutil.which("zstd") is None:
        pytest.skip("needs the zstd program")
    plain = make_tar(box["tmp"] / "a.tar", [_file("etc/hostname", b"box\n")], "w")
    subprocess.run(["zstd", "-q", "--rm", str(plain), "-o", str(box["tmp"] / "a.tar.zst")], check=True)
    extract(box["tmp"] / "a.tar.zst", box["root"])
    assert (box["root"] / "etc/hostname").read_bytes() == b"box\n"


def test_garbage_is_an_extract_error(box):
    (box["tmp"] / "a.tar.gz").write_bytes(b"\x1f\x8b" + b"not really gzip" * 40)
    with pytest.raises(ExtractError, match="could not extract tar archive"):
        extract(box["tmp"] / "a.tar.gz", box["root"])
    (box["tmp"] / "a.tar").write_bytes(b"")
    with pytest.raises(ExtractError):
        extract(box["tmp"] / "a.tar", box["root"])


def test_progress_and_cancellation(box):
    members = [_file(f"f{i}") for i in range(PROGRESS_EVERY * 2 + 5)]
    archive = make_tar(box["tmp"] / "a.tar.gz", members)
    counts: list[int] = []
    extract(archive, box["root"], on_count=counts.append)
    assert counts == [PROGRESS_EVERY, 2 * PROGRESS_EVERY]

    class Stop(Exception):
        pass

    seen = 0

    def check() -> None:
        nonlocal seen
        seen += 1
        if seen > 10:
            raise Stop

    with pytest.raises(Stop):
        extract(archive, box["tmp"] / "root", check=check)


def test_read_only_directory_modes_applied_last(box):
    members = [_dir("ro", 0o555), _file("ro/inside", b"i")]
    extract(make_tar(box["tmp"] / "a.tar.gz", members), box["root"])
    assert (box["root"] / "ro/inside").read_bytes() == b"i"
    assert stat.S_IMODE((box["root"] / "ro").stat().st_mode) == 0o555
    os.chmod(box["root"] / "ro", 0o755)  # let tmp_path cleanup work without root


def test_resolve_in_root_never_leaves(tmp_path):
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    os.symlink("/", root / "slash")
    os.symlink("../../..", root / "etc/up")
    for path in ("/../../x", "slash/../etc", "etc/up/up/etc", "../" * 50 + "etc"):
        resolved = resolve_in_root(str(root), path)
        assert resolved == str(root) or resolved.startswith(str(root) + os.sep), (path, resolved)


def test_copy_tree_keeps_links_and_modes(box):
    src = box["tmp"] / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin/tool").write_bytes(b"tool")
    os.chmod(src / "bin/tool", 0o4755)
    os.link(src / "bin/tool", src / "bin/tool2")
    os.symlink("/etc/passwd", src / "passwd")
    os.mkfifo(src / "fifo")
    dest = box["root"]
    stats = copy_tree(src, dest)
    assert stats.skipped == 1
    assert (dest / "bin/tool").read_bytes() == b"tool"
    assert stat.S_IMODE((dest / "bin/tool").stat().st_mode) == 0o4755
    assert (dest / "bin/tool2").stat().st_ino == (dest / "bin/tool").stat().st_ino
    assert os.readlink(dest / "passwd") == "/etc/passwd"
    shutil.rmtree(src)


def test_copy_host_file_does_not_follow_image_symlinks(box):
    root = box["root"]
    os.symlink(str(box["host"]), root / "etc")  # the image's /etc points at a host path
    source = box["tmp"] / "resolv.conf"
    source.write_text("nameserver 192.0.2.1\n")
    assert copy_host_file(str(source), root, "/etc/passwd")
    host_untouched_files = sorted(p.name for p in box["host"].iterdir())
    assert host_untouched_files == ["passwd"] and (box["host"] / "passwd").read_text() == "host secret\n"
    assert (root / str(box["host"]).lstrip("/") / "passwd").read_text() == "nameserver 192.0.2.1\n"
    assert not copy_host_file(str(box["tmp"] / "missing"), root, "/etc/x")
    source.unlink()
