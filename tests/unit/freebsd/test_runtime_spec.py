"""The neutral `ContainerSpec` as a jail (runtime.to_jail_spec, user_name) and the Runtime
entries whose FreeBSD answer needs no host; pure, no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleened.platform.base import BindMount, ContainerSpec, Limits, NetworkMode, ProcessSpec, UserNamespace
from kleened.platform.freebsd import jail, mounts, params
from kleened.platform.freebsd.containers import JailContainers
from kleened.platform.freebsd.runtime import JailRuntime, to_jail_spec, user_name


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:*:0:0::/root:/bin/sh\nwww:*:80:80::/var/www:/usr/sbin/nologin\n")
    return tmp_path


def spec(root: Path, **changes: object) -> ContainerSpec:
    base = dict(id="c0ffee123456", rootfs=root, hostname="web", process=ProcessSpec(args=["nginx"], env=["A=1"],
                cwd="/srv", uid=80, tty=True))
    return ContainerSpec(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "driver"), [(NetworkMode.HOST, "host"), (NetworkMode.NONE, "disabled"),
                                               (NetworkMode.NAMESPACE, "vnet"), (NetworkMode.ADDRESSES, "ipnet")])
def test_network_modes_are_upstreams_drivers(root: Path, mode: NetworkMode, driver: str):
    made, _ = to_jail_spec(spec(root, network=mode))
    assert made.network == jail.Network(driver)


def test_the_spec_becomes_the_jail_and_its_main_process(root: Path):
    limits = Limits(memory=1 << 30)
    bind = BindMount(source=Path("/data"), destination="/srv/data", read_only=True)
    made, command = to_jail_spec(spec(root, params={"allow.raw_sockets": None, "devfs_ruleset": "5"}, limits=limits,
                                      mounts=[bind]))
    assert (made.name, made.root, made.user, made.limits) == ("c0ffee123456", root, "www", limits)
    assert made.params == ["allow.raw_sockets", "devfs_ruleset=5", "host.hostname=web"]
    assert made.mounts == [mounts.Bind(source=Path("/data"), destination="/srv/data", read_only=True)]
    assert command == jail.Command(args=["nginx"], env=["A=1"], cwd="/srv", tty=True)
    given, _ = to_jail_spec(spec(root, params={"host.hostname": "mine"}))
    assert given.params == ["host.hostname=mine"]  # the user's hostname wins


def test_an_empty_value_reaches_jail_as_key_equals(root: Path):
    """`ip4.addr=` (an empty list) and a bare `vnet` are different words to jail(8): both survive
    core's round trip (`check_params`, then the spec) onto the `jail -c` line as given."""
    given = ["ip4.addr=", "allow.raw_sockets", "host.domainname=", "devfs_ruleset=5"]
    checked = JailContainers(JailRuntime(None), lambda cid: root).check_params(given)  # type: ignore[arg-type]
    assert checked == {"ip4.addr": "", "allow.raw_sockets": None, "host.domainname": "", "devfs_ruleset": "5"}
    made, _ = to_jail_spec(spec(root, params=checked))
    argv = jail.create_argv(made.name, made.root, [], params.jail_line(made.all_params()))
    assert argv[-6:] == ["exec.jail_user=www", "ip4.addr=", "allow.raw_sockets", "host.domainname=",
                         "devfs_ruleset=5", "host.hostname=web"]


def test_users_are_named_from_the_images_passwd(root: Path, tmp_path_factory: pytest.TempPathFactory):
    assert user_name(root, 80) == "www" and user_name(root, 0) == "root"
    assert user_name(tmp_path_factory.mktemp("empty"), 0) == "root"  # no passwd: root still has a name
    with pytest.raises(ValueError, match="uid 4242 has no name"):
        user_name(root, 4242)


@pytest.mark.parametrize(("changes", "message"), [
    ({"seccomp": "default"}, "seccomp profiles are Linux's"),
    ({"userns": UserNamespace(uid_base=100000, gid_base=100000, size=65536)}, "FreeBSD has no user namespaces"),
    ({"params": {"name": "other"}}, "set by kleened"),
])
def test_what_a_jail_cannot_be_is_a_value_error(root: Path, changes: dict, message: str):
    with pytest.raises(ValueError, match=message):
        to_jail_spec(spec(root, **changes))


def test_runtime_entries_without_a_host():
    assert JailRuntime.check_seccomp("") == "" and JailRuntime.check_seccomp("unconfined") == "unconfined"
    with pytest.raises(ValueError):
        JailRuntime.check_userns()
    assert JailRuntime(commands=None).oom_kills("c0ffee123456") == 0  # type: ignore[arg-type]
