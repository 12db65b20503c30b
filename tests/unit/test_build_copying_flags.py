"""COPY and ADD flags in the file driver: `--parents` (with the `/./` pivot and `**`), `--exclude`, `--chmod`,
heredoc files, downloads' fixed mode, and ADD's extraction of local archives, hostile ones included. No root."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from kleene_protocol.dockerignore import parse as parse_ignore
from kleened.core.builder.files import Chmod
from kleened.platform.posix.copying import CopyError, HostFiles

files = HostFiles()


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for rel in ("src/a.txt", "src/x/b.txt", "src/x/y/c.txt", "src/x/y/d.md", "pkg/one/p.json", "pkg/two/p.json",
                "home.txt", "homedir/keep", "homedir/skip.txt", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return root


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def apply(plan, rootfs: Path, dest: str, **kw) -> None:
    kw.setdefault("into_dir", True)
    rootfs.mkdir(exist_ok=True)
    plan.apply(rootfs, dest, uid=0, gid=0, check=lambda: None, **kw)


def test_parents_keep_directories_from_the_pivot_on(ctx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    apply(files.plan(ctx, ["pkg/*/p.json", "./src/./x/y/*.txt"], None, parents=True), out, "/app/")
    assert listing(out) == ["app/pkg/one/p.json", "app/pkg/two/p.json", "app/x/y/c.txt"]
    out2 = tmp_path / "out2"
    apply(files.plan(ctx, ["src/**/*.txt"], None, parents=True), out2, "/p/")
    assert listing(out2) == ["p/src/a.txt", "p/src/x/b.txt", "p/src/x/y/c.txt"]
    out3 = tmp_path / "out3"
    apply(files.plan(ctx, ["src/x"], None, parents=True), out3, "/d/")  # a directory keeps its own name too
    assert listing(out3) == ["d/src/x/b.txt", "d/src/x/y/c.txt", "d/src/x/y/d.md"]


def test_excludes_match_below_each_source(ctx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    apply(files.plan(ctx, ["hom*", "src"], None, excludes=parse_ignore("*.txt\n**/*.md\n")), out, "/d/")
    assert listing(out) == ["d/keep", "d/x/b.txt", "d/x/y/c.txt"]  # src's top-level a.txt is excluded
    with pytest.raises(CopyError, match="every source is excluded"):
        files.plan(ctx, ["home.txt"], None, excludes=parse_ignore("*.txt"))


def test_chmod_inline_files_and_fixed_modes(ctx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    os.chmod(ctx / "src/a.txt", 0o600)
    plan = files.plan(ctx, ["src"], None)
    plan.add_inline("motd", b"hello\n")
    download = tmp_path / "download"
    download.write_bytes(b"remote")
    plan.add_file("fetched.bin", download, mode=0o600, mtime=1_700_000_000)
    apply(plan, out, "/d/", chmod=Chmod("u=rwX,go=rX").apply)
    mode = {p: stat.S_IMODE(os.stat(out / "d" / p).st_mode) for p in ("a.txt", "x", "motd", "fetched.bin")}
    assert mode == {"a.txt": 0o644, "x": 0o755, "motd": 0o644, "fetched.bin": 0o644}
    assert (out / "d/motd").read_text() == "hello\n" and os.stat(out / "d/fetched.bin").st_mtime == 1_700_000_000
    plain = tmp_path / "plain"
    plan = files.plan(ctx, [], None)
    plan.add_file("f", download, mode=0o600, mtime=None)
    apply(plan, plain, "/f", into_dir=False)
    assert stat.S_IMODE(os.stat(plain / "f").st_mode) == 0o600  # Docker's mode for downloads
    assert plan.digest() != files.plan(ctx, [], None).digest()


def _tar(path: Path, members: dict[str, bytes], *, mode: str = "w:gz", extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid = len(data), 1234, 4321
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def test_add_extracts_local_archives_by_content(ctx: Path, tmp_path: Path) -> None:
    _tar(ctx / "app.tar.gz", {"bin/tool": b"tool", "etc/conf": b"conf"})
    _tar(ctx / "plain.tar", {"p": b"p"}, mode="w")
    (ctx / "fake.tar.gz").write_text("not an archive")
    plan = files.plan(ctx, ["app.tar.gz", "plain.tar", "fake.tar.gz"], None)
    plan.unpack_archives()
    out = tmp_path / "out"
    apply(plan, out, "/opt/", chown=True)
    assert listing(out) == ["opt/bin/tool", "opt/etc/conf", "opt/fake.tar.gz", "opt/p"]
    assert (out / "opt/fake.tar.gz").read_text() == "not an archive"
    if os.geteuid() == 0:  # owners are only set by root; --chown replaces the archive's own
        assert (os.stat(out / "opt/bin/tool").st_uid, os.stat(out / "opt/bin/tool").st_gid) == (0, 0)


def test_add_refuses_hostile_archives(ctx: Path, tmp_path: Path) -> None:
    up = tarfile.TarInfo("../../escaped")
    link = tarfile.TarInfo("conf")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    _tar(ctx / "evil.tar", {"ok": b"ok"}, extra=[up])
    _tar(ctx / "sneaky.tar", {}, mode="w", extra=[link])
    with tarfile.open(ctx / "sneaky.tar", "a") as tar:  # through the link, a write to "/etc/passwd"
        info = tarfile.TarInfo("conf/passwd")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"root"))
    out = tmp_path / "out"
    plan = files.plan(ctx, ["evil.tar"], None)
    plan.unpack_archives()
    with pytest.raises(CopyError, match=r"refusing archive member '\.\./\.\./escaped'"):
        apply(plan, out, "/d/")
    assert not (tmp_path / "escaped").exists()
    plan = files.plan(ctx, ["sneaky.tar"], None)
    plan.unpack_archives()
    apply(plan, out, "/d/")
    assert (out / "d/conf").is_symlink() and (out / "d/etc/passwd").read_text() == "root"  # inside /d
