"""Pure data of the Linux drivers (no root needed): config.json, jail parameters, mountinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleened.platform.base import BindMount, ContainerSpec, Limits, NetworkMode, ProcessSpec, UserNamespace
from kleened.platform.linux import bundle, mountinfo

BUNDLE = Path("/state/bundles/abc")


def config(**kw) -> dict:
    process = kw.pop("process", ProcessSpec(args=["sh", "-c", "echo hi"], env=["PATH=/bin"]))
    params = bundle.check_params(kw.pop("params", []))
    seccomp = kw.pop("seccomp", None)
    spec = ContainerSpec(id="abc", rootfs=Path("/r"), hostname="abc", process=process, params=params, **kw)
    return bundle.build_config(spec, bundle_dir=BUNDLE, init_path="/usr/bin/tini-static", cgroups_path="kt/abc",
                               seccomp=seccomp)


def test_defaults() -> None:
    c = config()
    assert c["process"]["args"] == ["/.init", "--", "sh", "-c", "echo hi"]
    assert c["process"]["terminal"] is False
    assert c["root"] == {"path": "/r", "readonly": False}
    assert c["hostname"] == "abc"
    assert c["linux"]["cgroupsPath"] == "kt/abc"
    assert [n["type"] for n in c["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]
    assert "CAP_NET_RAW" not in c["process"]["capabilities"]["bounding"]
    destinations = [m["destination"] for m in c["mounts"]]
    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/.init"]
    init = c["mounts"][-1]
    assert init == {
        "destination": "/.init",
        "type": "bind",
        "source": "/usr/bin/tini-static",
        "options": ["bind", "ro"],
    }
    devices = c["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    assert {(d["major"], d.get("minor")) for d in devices[1:]} == {
        (1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, None)
    }  # fmt: skip
    assert "/proc/kcore" in c["linux"]["maskedPaths"] and "/proc/sys" in c["linux"]["readonlyPaths"]


def test_networks() -> None:
    assert {"type": "network"} in config(network=NetworkMode.NONE)["linux"]["namespaces"]
    ns = config(network=NetworkMode.NAMESPACE, netns_path="/run/netns/x")["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/netns/x"} in ns
    with pytest.raises(ValueError, match="netns path"):
        config(network=NetworkMode.NAMESPACE)


def test_bind_mounts_follow_the_standard_ones() -> None:
    c = config(mounts=[BindMount(Path("/v/a"), "/data"), BindMount(Path("/v/b"), "/ro", read_only=True)])
    assert c["mounts"][-2:] == [
        {"destination": "/data", "type": "bind", "source": "/v/a", "options": ["rbind", "rw"]},
        {"destination": "/ro", "type": "bind", "source": "/v/b", "options": ["rbind", "ro"]},
    ]


def test_user_and_capabilities() -> None:
    process = ProcessSpec(args=["id"], env=[], cwd="/tmp", uid=1000, gid=100, additional_gids=[5], tty=True)
    p = config(process=process, params=["allow.raw_sockets"])["process"]
    assert p["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5]}
    assert p["cwd"] == "/tmp" and p["terminal"] is True
    assert "CAP_NET_RAW" in p["capabilities"]["bounding"]
    assert p["capabilities"]["effective"] == p["capabilities"]["permitted"] == []
    exec_process = bundle.build_process(process, ["CAP_KILL"], init=False)
    assert exec_process["args"] == ["id"]


def test_params_map_to_config() -> None:
    c = config(params=["host.hostname=web", "mount.nodevfs", "linux.memory=64m", "linux.pids=10", "linux.cpus=0.5"])
    assert c["hostname"] == "web"
    dev = c["mounts"][1]
    assert dev["type"] == "bind" and dev["source"] == str(BUNDLE / "dev")
    # The linux.* limits reach the bundle as `ContainerSpec.limits` (core merges them).
    assert set(c["linux"]["resources"]) == {"devices"}


def test_limits_map_to_resources_and_rlimits() -> None:
    limits = Limits(memory=64 << 20, memory_swap=128 << 20, cpu_quota=50_000, cpu_period=100_000, cpu_shares=512,
                    pids=10, nofile=(100, 200), nproc=(5, 6))
    c = config(limits=limits)
    resources = c["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000, "shares": 512}
    assert resources["pids"] == {"limit": 10}
    assert c["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
                                       {"type": "RLIMIT_NPROC", "soft": 5, "hard": 6}]
    assert "rlimits" not in config()["process"]


def test_limit_update_lifts_what_is_unset() -> None:
    """`runc update -r` keeps what it is not given: an update must say "unlimited" explicitly."""
    assert bundle.limit_resources(Limits()) == {}
    assert bundle.limit_resources(Limits(), lift=True) == {
        "memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1, "shares": 1024}, "pids": {"limit": -1}}
    assert bundle.limit_resources(Limits(pids=7), lift=True)["pids"] == {"limit": 7}


def test_seccomp_goes_into_linux() -> None:
    assert "seccomp" not in config()["linux"]
    profile = {"defaultAction": "SCMP_ACT_ALLOW"}
    assert config(seccomp=profile)["linux"]["seccomp"] == profile


@pytest.mark.parametrize("network", [NetworkMode.NONE, NetworkMode.HOST, NetworkMode.NAMESPACE])
def test_user_namespace(network: NetworkMode) -> None:
    userns = UserNamespace(uid_base=100000, gid_base=200000, size=65536)
    c = config(userns=userns, network=network, netns_path="/run/netns/x")
    assert {"type": "user"} in c["linux"]["namespaces"]
    assert c["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert c["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]
    sys_mount = next(m for m in c["mounts"] if m["destination"] == "/sys")
    if network is NetworkMode.NONE:  # runc's own network namespace belongs to the user namespace
        assert sys_mount["type"] == "sysfs" and "/sys/fs/cgroup" not in c["linux"]["maskedPaths"]
    else:  # sysfs needs the owner of the network namespace: the host's /sys, read-only, cgroups hidden
        assert sys_mount["type"] == "bind" and "ro" in sys_mount["options"] and "rbind" in sys_mount["options"]
        assert "/sys/fs/cgroup" in c["linux"]["maskedPaths"]
    assert "uidMappings" not in config()["linux"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["mount.nodevfs"], {"mount.devfs": "false"}),
        (["mount.devfs=false", "mount.devfs"], {"mount.devfs": "true"}),
        (["allow.raw_sockets"], {"allow.raw_sockets": "true"}),
        (["allow.noraw_sockets"], {"allow.raw_sockets": "false"}),
        (["exec.noclean", "exec.system_jail_user"], {"exec.clean": "false", "exec.system_jail_user": "true"}),
        (["exec.jail_user=www", "enforce_statfs=1"], {"exec.jail_user": "www", "enforce_statfs": "1"}),
        (["allow.sysvipc"], {"allow.sysvipc": "true"}),
        (["linux.memory=1g", "linux.memory=4096"], {"linux.memory": "4096"}),
        (["linux.cpus=2"], {"linux.cpus": "2.0"}),
        (["linux.seccomp=unconfined"], {"linux.seccomp": "unconfined"}),
        ([], {}),
    ],
)
def test_check_params_normalises(given: list[str], expected: dict[str, str]) -> None:
    assert bundle.check_params(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("vnet", "unsupported jail parameter 'vnet' on Linux"),
        ("ip4.addr=10.0.0.1", "unsupported jail parameter 'ip4.addr' on Linux"),
        ("allow.nomount", "unsupported jail parameter 'allow.nomount' on Linux"),
        ("host.hostname", "needs a value"),
        ("host.hostname=a b", "invalid hostname"),
        ("mount.devfs=maybe", "expects true or false"),
        ("allow.sysvipc=false", "cannot be disabled"),
        ("enforce_statfs=3", "expects 0, 1 or 2"),
        ("linux.memory=lots", "positive size"),
        ("linux.memory=0", "positive size"),
        ("linux.pids=-1", "positive integer"),
        ("linux.cpus=nan", "at least 0.01"),
        ("linux.seccomp=/etc/profile.json", "'default' or 'unconfined'"),
    ],
)
def test_check_params_refuses(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bundle.check_params([given])


def test_mountinfo_parse_unescapes_and_reads_super_options() -> None:
    text = (
        "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        "40 23 0:50 / /s/containers/c1/rootfs rw,relatime - overlay overlay rw,lowerdir=b:a,upperdir=../u\n"
    )
    first, second = mountinfo.parse(text)
    assert first.mountpoint == Path("/mnt/with space") and first.fstype == "ext3" and first.root == "/"
    assert second.option("lowerdir") == "b:a" and second.option("missing") is None
