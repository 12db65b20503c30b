"""COPY's file driver (`platform.posix.copying`) on plain directories: source patterns, .dockerignore, destination
semantics, symlinks that try to leave the context or the root, digests, and uploaded contexts. No root needed."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleene_protocol.dockerignore import parse as parse_ignore
from kleened.platform.posix.copying import CopyError, HostFiles

files = HostFiles()


def _nothing() -> None:
    return None


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir/sub").mkdir(parents=True)
    for rel, text in {"a.txt": "a", "b.txt": "b", "c.log": "c", "dir/x": "x", "dir/sub/y": "y",
                      "arr[0].txt": "arr"}.items():
        (root / rel).write_text(text)
    (root / "dir/link").symlink_to("sub/y")
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc/testdir").mkdir(parents=True)
    (root / "etc/symbolic_testdir").symlink_to("/etc/testdir")
    return root


def names(ctx: Path, *patterns: str, ignore: str = "") -> list[str]:
    plan = files.plan(ctx, patterns, parse_ignore(ignore) if ignore else None)
    return [s.name for s in plan.sources]


def copy(ctx: Path, rootfs: Path, patterns: list[str], dest: str, *, into_dir: bool = False, ignore: str = "") -> None:
    plan = files.plan(ctx, patterns, parse_ignore(ignore) if ignore else None)
    plan.apply(rootfs, dest, into_dir=into_dir, uid=0, gid=0, check=_nothing)


def tree(root: Path) -> dict[str, str]:
    out = {}
    for top, _dirs, names_ in os.walk(root):
        for name in names_:
            path = Path(top, name)
            rel = path.relative_to(root).as_posix()
            out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_text()
    return out


def test_patterns(ctx):
    assert names(ctx, "*.txt") == ["a.txt", "arr[0].txt", "b.txt"]
    assert names(ctx, "?.txt", "dir/*") == ["a.txt", "b.txt", "link", "sub", "x"]
    assert names(ctx, "arr\\[0\\].txt") == ["arr[0].txt"]
    assert names(ctx, "[ab].txt", "[!ab].log") == ["a.txt", "b.txt", "c.log"]
    assert names(ctx, "/a.txt", "./dir/../a.txt") == ["a.txt", "a.txt"]
    assert [s.is_dir for s in files.plan(ctx, ["."], None).sources] == [True]


@pytest.mark.parametrize("pattern", ["../x", "..", "dir/../../x", "/../etc/passwd"])
def test_patterns_that_climb_out_are_refused(ctx, pattern):
    with pytest.raises(CopyError, match="forbidden path outside the build context"):
        files.plan(ctx, [pattern], None)


def test_missing_sources(ctx):
    with pytest.raises(CopyError, match="file not found in build context"):
        files.plan(ctx, ["nothere"], None)
    with pytest.raises(CopyError, match="no source files were specified"):
        files.plan(ctx, ["*.none"], None)


def test_context_symlinks_are_followed_inside_the_context(ctx, tmp_path):
    (ctx / "etc").mkdir()
    (ctx / "etc/passwd").write_text("context's own")
    (ctx / "abs").symlink_to("/etc/passwd")
    (ctx / "rel").symlink_to("../../../../../../etc/passwd")
    assert [Path(s.path).read_text() for s in files.plan(ctx, ["abs", "rel"], None).sources] == ["context's own"] * 2


def test_dockerignore_hides_files_and_entries(ctx, rootfs):
    ignore = "*.log\ndir/sub\nb.txt\n!dir/sub/y\n"
    assert names(ctx, "*", ignore=ignore) == ["a.txt", "arr[0].txt", "dir"]
    with pytest.raises(CopyError, match=r"excluded by \.dockerignore"):
        files.plan(ctx, ["b.txt"], parse_ignore(ignore))
    copy(ctx, rootfs, ["dir"], "/out", into_dir=True, ignore="dir/sub/y\n")
    assert tree(rootfs / "out") == {"x": "x", "link": "-> sub/y"}
    (ctx / "secret").write_text("s")
    (ctx / "alias").symlink_to("secret")
    with pytest.raises(CopyError):  # the rules apply to where a link leads
        files.plan(ctx, ["alias"], parse_ignore("secret\n"))


def test_destinations(ctx, rootfs):
    copy(ctx, rootfs, ["a.txt"], "/root/", into_dir=True)
    copy(ctx, rootfs, ["a.txt"], "/root/deep/er/file.txt")
    copy(ctx, rootfs, ["a.txt"], "/etc")  # an existing directory
    copy(ctx, rootfs, ["a.txt", "b.txt"], "/etc/symbolic_testdir/", into_dir=True)
    copy(ctx, rootfs, ["dir"], "/opt")
    got = tree(rootfs)
    assert got["root/a.txt"] == got["root/deep/er/file.txt"] == got["etc/a.txt"] == "a"
    assert (got["etc/testdir/a.txt"], got["etc/testdir/b.txt"]) == ("a", "b")
    assert (got["opt/x"], got["opt/sub/y"], got["opt/link"]) == ("x", "y", "-> sub/y")


def test_destinations_never_leave_the_root(ctx, rootfs, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "victim").write_text("host")
    (rootfs / "abs").symlink_to(str(host))
    (rootfs / "rel").symlink_to("../../../../../../.." + str(host))
    (rootfs / "etc/victim").symlink_to(str(host / "victim"))
    copy(ctx, rootfs, ["a.txt"], "/abs/", into_dir=True)
    copy(ctx, rootfs, ["dir"], "/rel/d")
    copy(ctx, rootfs, ["a.txt"], "/etc/victim")
    assert tree(host) == {"victim": "host"}
    inside = rootfs / str(host).lstrip("/")
    assert (inside / "a.txt").read_text() == "a" and (inside / "d/x").read_text() == "x"
    assert not (rootfs / "etc/victim").is_symlink() and (rootfs / "etc/victim").read_text() == "a"


def test_a_file_in_the_way_is_an_error(ctx, rootfs):
    (rootfs / "file").write_text("f")
    with pytest.raises(CopyError, match="not a directory"):
        copy(ctx, rootfs, ["a.txt"], "/file/x/", into_dir=True)


def test_digest_follows_content_not_times(ctx):
    def digest() -> str:
        return files.plan(ctx, ["*.txt", "dir"], None).digest()

    first = digest()
    os.utime(ctx / "a.txt", (0, 0))
    assert digest() == first
    (ctx / "dir/sub/y").write_text("changed")
    assert digest() != first


def test_unpack_refuses_hostile_archives(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("../evil"))
    (tmp_path / "evil.tar").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match=r"\.\."):
        files.unpack(tmp_path / "evil.tar", tmp_path / "out", max_bytes=1 << 20, check=_nothing)
    assert not (tmp_path / "evil").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "*", "a", "link", "up", "abs", "[a-z]*", ""]), min_size=1, max_size=6))
def test_sources_never_leave_the_context(tmp_path_factory, parts):
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "a").mkdir()
    (ctx / "a/f").write_text("f")
    (ctx / "link").symlink_to("a")
    (ctx / "up").symlink_to("../../../..")
    (ctx / "abs").symlink_to("/")
    try:
        plan = files.plan(ctx, ["/".join(parts)], None)
    except CopyError:
        return
    real = os.path.realpath(ctx)
    assert all(os.path.realpath(s.path).startswith(real) for s in plan.sources)
