"""`platform.linux.mountinfo`: only lines naming the path are parsed, escapes included."""

from __future__ import annotations

from pathlib import Path

from kleened.platform.linux import mountinfo

LINES = [
    r"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
    r"90 22 0:50 / /var/lib/k/containers/abc/rootfs rw - overlay overlay rw,lowerdir=../l,upperdir=u",
    r"91 22 0:51 / /var/lib/k/containers/abcd/rootfs rw - overlay overlay rw,lowerdir=../l,upperdir=u",
    r"92 90 0:52 / /var/lib/k/containers/abc/rootfs/dev rw - tmpfs tmpfs rw",
    r"93 22 0:53 / /srv/a\040b rw - tmpfs tmpfs rw",
]


def test_mentioning_parses_only_the_lines_that_name_the_path(tmp_path: Path):
    source = tmp_path / "mountinfo"
    source.write_text("\n".join(LINES) + "\n")
    found = {str(m.mountpoint) for m in mountinfo._mentioning(Path("/var/lib/k/containers/abc"), str(source))}
    # A superset by text (".../abcd" names ".../abc" too); the callers compare whole paths.
    assert found == {"/var/lib/k/containers/abc/rootfs", "/var/lib/k/containers/abc/rootfs/dev",
                     "/var/lib/k/containers/abcd/rootfs"}
    spaced = mountinfo._mentioning(Path("/srv/a b"), str(source))
    assert [str(m.mountpoint) for m in spaced] == ["/srv/a b"]


def test_escape_is_the_inverse_of_the_kernels_escapes():
    for path in ("/plain", "/a b", "/tab\there", "/new\nline", "/back\\slash"):
        assert mountinfo._unescape(mountinfo._escape(path)) == path
    assert mountinfo._escape("/a b") == r"/a\040b"


def test_of_types_keeps_only_those_filesystems(tmp_path: Path):
    source = tmp_path / "mountinfo"
    source.write_text("\n".join([*LINES, r"30 22 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
                                 r"31 22 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
                                 r"32 22 0:28 / /srv/cgroup\040x rw - tmpfs cgroup rw"]) + "\n")
    found = mountinfo.of_types("cgroup", "cgroup2", source=str(source))
    assert [(str(m.mountpoint), m.fstype) for m in found] == [("/sys/fs/cgroup/memory", "cgroup"),
                                                              ("/sys/fs/cgroup/unified", "cgroup2")]
