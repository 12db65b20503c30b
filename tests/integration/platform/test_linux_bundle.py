"""Pure data of the Linux drivers (no root needed): config.json, jail parameters, mountinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleened.platform.base import BindMount, ContainerSpec, NetworkMode, ProcessSpec
from kleened.platform.linux import bundle, mountinfo

BUNDLE = Path("/state/bundles/abc")


def config(**kw) -> dict:
    process = kw.pop("process", ProcessSpec(args=["sh", "-c", "echo hi"], env=["PATH=/bin"]))
    params = bundle.check_params(kw.pop("params", []))
    spec = ContainerSpec(id="abc", rootfs=Path("/r"), hostname="abc", process=process, params=params, **kw)
    return bundle.build_config(spec, bundle_dir=BUNDLE, init_path="/usr/bin/tini-static", cgroups_path="kt/abc")


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
    resources = c["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert resources["pids"] == {"limit": 10}
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000}


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
