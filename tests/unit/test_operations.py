"""Pure parts of cp, commit and system: Docker's cp path rules, the entry names the copy helper
gives, --change parsing through the builder's decoders, and the cgroup mode."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from klee.commands.files import Target, _rename, plan, split_location
from klee.errors import UsageError
from kleened.core.builder.steps import Stage
from kleened.core.commit import apply_changes, parse_changes
from kleened.core.errors import InvalidArgument
from kleened.platform.chroot_tar import display_name, follows_link
from kleened.platform.linux.diskusage import cgroup_mode, tree_size

DIR, FILE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644


@pytest.mark.parametrize(("arg", "expected"), [
    ("web:/etc/hosts", ("web", "/etc/hosts")),
    ("web:relative", ("web", "relative")),
    ("/local:with/colon", (None, "/local:with/colon")),
    ("./a:b", (None, "./a:b")),
    ("dir/a:b", (None, "dir/a:b")),
    ("plain", (None, "plain")),
    ("-", (None, "-")),
])  # fmt: skip
def test_split_location(arg, expected):
    assert split_location(arg) == expected


@pytest.mark.parametrize(("src", "is_dir", "dest", "mode", "target"), [
    ("/f", False, "/new", None, Target("/", "new")),  # a file to a new name
    ("/f", False, "/d", DIR, Target("/d", "f")),  # into a directory
    ("/f", False, "/old", FILE, Target("/", "old")),  # over a file
    ("/d", True, "/new", None, Target("/", "new")),  # a directory created as DEST
    ("/d", True, "/e", DIR, Target("/e", "d")),  # a directory into a directory
    ("/d/.", True, "/e", DIR, Target("/e", ".")),  # only its contents
    ("/d", True, "/new/", None, Target("/", "new")),  # a missing DEST/ is made for a directory
    ("rel", False, "out", None, Target(".", "out")),
])  # fmt: skip
def test_docker_cp_rules(src, is_dir, dest, mode, target):
    assert plan(src, is_dir, src.rstrip("/.").rsplit("/", 1)[-1] or "/", dest, mode) == target


def test_docker_cp_refusals():
    with pytest.raises(UsageError, match="cannot copy a directory to a file"):
        plan("/d", True, "d", "/f", FILE)
    with pytest.raises(UsageError, match="does not exist"):
        plan("/f", False, "f", "/missing/", None)


@pytest.mark.parametrize(("name", "new", "expected"), [
    ("data", "copy", "copy"), ("data/a/b", "copy", "copy/a/b"), ("data/a", ".", "a"), ("data", ".", "."),
    ("./data/x", "y", "y/x"),
])  # fmt: skip
def test_rename_first_component(name, new, expected):
    assert _rename(name.removeprefix("./"), new) == expected


@pytest.mark.parametrize(("path", "name", "follows"), [
    ("/etc/hosts", "hosts", False), ("/etc/", "etc", True), ("/etc/.", "etc", True), ("/", "/", True),
    ("/.", "/", True), ("rel/x", "x", False), ("/a/b/./", "b", True),
])  # fmt: skip
def test_helper_names_and_link_rule(path, name, follows):
    assert display_name(path) == name
    assert follows_link(path) is follows


def _stage() -> Stage:
    return Stage(index=0, container_id="c", parent_id="p", layers=[], user="", workdir="/srv", cmd=["sh"],
                 entrypoint=None, exposed_ports=[], labels={}, env=["A=1"])


def test_changes_apply_like_a_build():
    stage = _stage()
    apply_changes(stage, parse_changes(['CMD ["run", "$A"]', "ENV B=$A-x", "WORKDIR app", "EXPOSE 80",
                                        "LABEL k=v", "USER nobody", "ENTRYPOINT /bin/entry"]))
    assert stage.cmd == ["run", "$A"]  # exec form: no expansion, as Docker
    assert stage.env == ["A=1", "B=1-x"] and stage.workdir == "/srv/app"
    assert stage.exposed_ports == ["80/tcp"] and stage.labels == {"k": "v"} and stage.user == "nobody"
    assert stage.entrypoint == ["/bin/sh", "-c", "/bin/entry"]


@pytest.mark.parametrize("line", ["RUN echo", "COPY a b", "FROM x", "ADD a b", "ARG X", "NOPE x"])
def test_changes_that_are_not_settings_are_refused(line):
    with pytest.raises(InvalidArgument):
        parse_changes([line])


def test_cgroup_mode_and_sizes(tmp_path: Path):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2/cgroup.controllers").write_text("cpu\n")
    (tmp_path / "hybrid/unified").mkdir(parents=True)
    (tmp_path / "hybrid/unified/cgroup.controllers").write_text("")
    (tmp_path / "v1/memory").mkdir(parents=True)
    (tmp_path / "none").mkdir()
    assert [cgroup_mode(tmp_path / m) for m in ("v2", "hybrid", "v1", "none")] == ["v2", "hybrid", "v1", "none"]
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d/a").write_bytes(b"x" * 10)
    (tree / "b").hardlink_to(tree / "d/a")
    (tree / "l").symlink_to("d/a")
    assert tree_size(tree) == 10 and tree_size(tmp_path / "gone") == 0


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1000, 256 * 1024 + 3])
def test_websocket_masking_matches_rfc6455(size):
    import os

    from klee.wire.websocket import _masked

    payload, mask = os.urandom(size), os.urandom(4)
    assert _masked(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_paths_under_mounts_map_to_their_sources(tmp_path: Path):
    from kleene_protocol.models import MountPoint
    from kleened.core.copies import Place, _in_mount
    from kleened.core.errors import NotFound

    (tmp_path / "vols/v1").mkdir(parents=True)
    (tmp_path / "host.conf").write_text("x")
    mounts = [MountPoint(type="volume", container_id="c", destination="/data", source="v1"),
              MountPoint(type="volume", container_id="c", destination="/data/deeper", source="v1"),
              MountPoint(type="nullfs", container_id="c", destination="/etc/app.conf",
                         source=str(tmp_path / "host.conf"), read_only=True)]
    vols = lambda name: tmp_path / "vols" / name  # noqa: E731
    assert _in_mount(mounts, "/etc/passwd", vols) is None
    assert _in_mount(mounts, "/database", vols) is None  # a prefix of a name is not a parent
    assert _in_mount(mounts, "/data", vols) == Place(tmp_path / "vols/v1", "/", "data")
    assert _in_mount(mounts, "/data/a/b/", vols) == Place(tmp_path / "vols/v1", "/a/b/")
    assert _in_mount(mounts, "/data/./a/.", vols) == Place(tmp_path / "vols/v1", "/a/.")
    assert _in_mount(mounts, "/data/deeper/x", vols).path == "/x"  # the deepest mount wins
    assert _in_mount(mounts, "/etc/app.conf", vols) == Place(tmp_path, "/host.conf", "app.conf", True)
    with pytest.raises(NotFound):
        _in_mount(mounts, "/etc/app.conf/x", vols)
