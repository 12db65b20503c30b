"""The SIMULATED FreeBSD host refuses what the real tools refuse: the driver tests only mean
something if a wrong command line or a wrong order fails here as it would on FreeBSD."""

from __future__ import annotations

from pathlib import Path

from tests.freebsd_sim.host import SimHost


def refused(sim: SimHost, tool: str, *args: str, input: bytes | None = None) -> str:
    done = sim.run(tool, *args, input=input)
    assert done.returncode != 0, f"{tool} {' '.join(args)} was accepted"
    return done.stderr.decode()


def test_zfs_refusals(sim: SimHost):
    sim.ok("zfs", "create", "zroot/k")
    assert "parent does not exist" in refused(sim, "zfs", "create", "zroot/x/y")
    assert "dataset already exists" in refused(sim, "zfs", "create", "zroot/k")
    assert "dataset does not exist" in refused(sim, "zfs", "clone", "zroot/k@nope", "zroot/c")
    (sim.mountpoint("zroot/k") / "file").write_text("hello")
    sim.ok("zfs", "snapshot", "zroot/k@s1")
    (sim.mountpoint("zroot/k") / "file").write_text("changed")
    sim.ok("zfs", "clone", "zroot/k@s1", "zroot/c")
    assert (sim.mountpoint("zroot/c") / "file").read_text() == "hello"  # a clone is the snapshot's content
    assert "snapshot has dependent clones" in refused(sim, "zfs", "destroy", "zroot/k@s1")
    assert "filesystem has children" in refused(sim, "zfs", "destroy", "zroot/k")
    assert "filesystem has dependent clones" in refused(sim, "zfs", "destroy", "-r", "zroot/k")
    clones = sim.ok("zfs", "list", "-H", "-o", "name,clones", "-t", "snapshot", "-r", "zroot/k")
    assert clones == "zroot/k@s1\tzroot/c\n"
    assert sim.ok("zfs", "list", "-H", "-o", "origin", "zroot/c") == "zroot/k@s1\n"
    sim.ok("zfs", "destroy", "zroot/c")
    sim.ok("zfs", "destroy", "-r", "zroot/k")
    assert sim.datasets() == ["zroot"] and sim.snapshots() == []


def test_zfs_rename_moves_snapshots_and_busy_datasets_stay(sim: SimHost, tmp_path: Path):
    sim.ok("zfs", "create", "zroot/a")
    sim.ok("zfs", "create", "zroot/a/b")
    sim.ok("zfs", "snapshot", "zroot/a/b@step")
    assert "dataset already exists" in refused(sim, "zfs", "rename", "zroot/a/b", "zroot/a")
    sim.ok("zfs", "rename", "-f", "zroot/a/b", "zroot/b")
    assert sim.snapshots() == ["zroot/b@step"] and sim.mountpoint("zroot/b").is_dir()
    target = sim.mountpoint("zroot/b") / "mnt"
    target.mkdir()
    sim.ok("mount_nullfs", str(tmp_path), str(target))
    assert "busy" in refused(sim, "zfs", "destroy", "-rf", "zroot/b")
    sim.ok("umount", str(target))
    assert "not a file system root directory" in refused(sim, "umount", str(target))
    sim.ok("zfs", "destroy", "-r", "zroot/b")
    sim.ok("zfs", "destroy", "-r", "zroot/a")


def test_zfs_promote_moves_the_snapshots_up_to_the_origin_and_swaps_the_relation(sim: SimHost):
    """A stage's container `o` (cloned from an image `i`) with steps s1, s2, s3; the next stage's
    container `c` clones o@s2 and so does `d`: promoting `c` moves s1 and s2 to it (d follows),
    s3 stays, and `o` becomes a clone of c@s2 that can be destroyed."""
    sim.ok("zfs", "create", "zroot/i")
    sim.ok("zfs", "snapshot", "zroot/i@image")
    sim.ok("zfs", "clone", "zroot/i@image", "zroot/o")
    for step in ("s1", "s2", "s3"):
        (sim.mountpoint("zroot/o") / step).write_text(step)
        sim.ok("zfs", "snapshot", f"zroot/o@{step}")
    sim.ok("zfs", "clone", "zroot/o@s2", "zroot/c")
    sim.ok("zfs", "clone", "zroot/o@s2", "zroot/d")
    sim.ok("zfs", "snapshot", "zroot/c@s1")  # a name the promote would bring along
    assert "not a cloned filesystem" in refused(sim, "zfs", "promote", "zroot/i")
    assert "does not exist" in refused(sim, "zfs", "promote", "zroot/nope")
    assert "conflicting snapshot '@s1'" in refused(sim, "zfs", "promote", "zroot/c")
    sim.ok("zfs", "destroy", "zroot/c@s1")
    assert "filesystem has dependent clones" in refused(sim, "zfs", "destroy", "-r", "zroot/o")
    sim.ok("zfs", "promote", "zroot/c")

    def origin(name: str) -> str:
        return sim.ok("zfs", "list", "-H", "-o", "origin", name).strip()

    assert (origin("zroot/c"), origin("zroot/o"), origin("zroot/d")) == ("zroot/i@image", "zroot/c@s2", "zroot/c@s2")
    assert [s for s in sim.snapshots() if not s.startswith("zroot/i@")] == ["zroot/c@s1", "zroot/c@s2", "zroot/o@s3"]
    clone = sim.run("zfs", "clone", "zroot/c@s1", "zroot/e")  # a moved snapshot keeps its content
    assert clone.returncode == 0 and sorted(p.name for p in sim.mountpoint("zroot/e").iterdir()) == ["s1"]
    assert "snapshot has dependent clones" in refused(sim, "zfs", "destroy", "zroot/i@image")  # c's origin now
    sim.ok("zfs", "destroy", "-r", "zroot/o")  # its own s3 goes with it
    sim.ok("zfs", "destroy", "zroot/e")
    sim.ok("zfs", "destroy", "zroot/d")
    assert "filesystem has children" in refused(sim, "zfs", "destroy", "zroot/c")
    sim.ok("zfs", "destroy", "-r", "zroot/c")
    sim.ok("zfs", "destroy", "-r", "zroot/i")
    assert sim.datasets() == ["zroot"] and sim.snapshots() == []


def test_interface_refusals(sim: SimHost):
    assert sim.ok("ifconfig", "bridge", "create") == "bridge0\n"
    assert "No such file or directory" in refused(sim, "ifconfig", "bridge0", "addm", "epair9a")
    assert sim.ok("ifconfig", "epair", "create") == "epair0a\n"
    sim.ok("ifconfig", "bridge0", "addm", "epair0a")
    assert "busy" in refused(sim, "ifconfig", "bridge0", "addm", "epair0a")
    assert "File exists" in refused(sim, "ifconfig", "bridge0", "name", "em0")
    assert "Invalid argument" in refused(sim, "ifconfig", "bridge0", "group", "kleene0")  # ends in a digit
    assert "Invalid argument" in refused(sim, "ifconfig", "em0", "destroy")  # not a clone
    assert "Can't assign requested address" in refused(sim, "ifconfig", "em0", "inet", "10.9.9.9", "-alias")
    assert "Invalid argument" in refused(sim, "ifconfig", "epair0b", "vnet", "nojail")
    sim.ok("ifconfig", "epair0a", "destroy")  # both ends go
    assert "epair0b" not in sim.interfaces() and sim.interfaces()["bridge0"]["members"] == []
    sim.ok("ifconfig", "bridge0", "destroy")


def test_routes_need_an_address_and_there_is_one_default(sim: SimHost):
    assert "interface: em0" in sim.ok("route", "-n", "get", "-inet", "default")
    assert "File exists" in refused(sim, "route", "add", "-inet", "default", "192.0.2.2")
    assert "has not been found" in refused(sim, "route", "-n", "get", "-inet6", "default")
    assert "Network is unreachable" in refused(sim, "route", "add", "-inet6", "default", "fd00::1")


def test_pfctl_refuses_bad_rulesets_and_keeps_the_old_ones(sim: SimHost):
    sim.ok("pfctl", "-f", "-", input=b'ext="em0"\npass on $ext\n')
    assert "macro 'int' not defined" in refused(sim, "pfctl", "-f", "-", input=b"pass on $int\n")
    assert "syntax error" in refused(sim, "pfctl", "-f", "-", input=b"pass on on em0\n")
    assert [r["text"] for r in sim.pf()["main"]] == ["pass on em0"]
    sim.ok("pfctl", "-e")
    assert "already enabled" in refused(sim, "pfctl", "-e")


def test_jail_refusals(sim: SimHost, busybox_tree: Path):
    sim.ok("zfs", "create", "zroot/j")
    root = sim.mountpoint("zroot/j")
    assert "No such file" in refused(sim, "jail", "-c", "path=/nonexistent", "name=j1", "persist")
    assert "numeric" in refused(sim, "jail", "-c", f"path={root}", "name=123", "persist")
    assert "unknown parameter" in refused(sim, "jail", "-c", f"path={root}", "name=j1", "persist", "bogus.param=1")
    sim.ok("jail", "-c", f"path={root}", "name=j1", "persist")
    assert "already exists" in refused(sim, "jail", "-c", f"path={root}", "name=j1", "persist")
    sim.ok("jail", "-c", f"path={root}", "name=j2")  # neither persist nor a command: gone at once
    assert list(sim.jails()) == ["j1"]
    assert "not found" in refused(sim, "jexec", "nojail", "/bin/true")
    assert refused(sim, "jls", "-j", "nojail").startswith("jls: jail")
    sim.ok("jail", "-r", "j1")
    assert "not found" in refused(sim, "jail", "-r", "j1")
    sim.ok("zfs", "destroy", "zroot/j")


def test_rctl_and_sysctl(sim: SimHost):
    assert "read only tunable" in refused(sim, "sysctl", "kern.racct.enable=1")
    assert "unknown oid" in refused(sim, "sysctl", "net.link.bridge.pfil_bridge=1")  # if_bridge not loaded yet
    sim.ok("ifconfig", "bridge", "create")
    sim.ok("sysctl", "net.link.bridge.pfil_bridge=1")
    sim.ok("ifconfig", "bridge0", "destroy")
    assert "unknown oid" in refused(sim, "sysctl", "-n", "no.such.oid")
    assert "Invalid argument" in refused(sim, "rctl", "-a", "jail:x:bogus:deny=1")
    sim.set_sysctl("kern.racct.enable", "0")
    assert "RACCT/RCTL present, but disabled" in refused(sim, "rctl", "-a", "jail:x:maxproc:deny=1")
