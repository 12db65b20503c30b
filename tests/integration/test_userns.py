"""User namespaces (`userns_remap`): a container's root is an unprivileged host uid, its files
stay as everyone else's on disk, and volumes and networks still work. One daemon with a range
of its own for the module."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.integration.test_containers import create, exec_create, run, start_detached
from tests.integration.test_networks import subnets
from tests.wsapi import create_image, exec_stream

SIZE = 65536


@pytest.fixture(scope="module")
def remapped() -> Iterator[tuple[Daemon, int]]:
    require_root_runtime()
    base = (2000 + secrets.randbelow(20000)) * SIZE  # far above the ids of real users
    with tempfile.TemporaryDirectory(prefix="kleened-test-") as tmp, running_daemon(
        Path(tmp), extra={"userns_remap": f"{base}:{base}:{SIZE}"}
    ) as daemon:
        yield daemon, base


@pytest.fixture(scope="module")
def image(remapped) -> str:
    return create_image(remapped[0], tag=f"usbox:{secrets.token_hex(3)}")


@pytest.fixture
def uapi(remapped):
    with remapped[0].client() as client:
        yield client


def sh(api, daemon, image: str, script: str, **config) -> str:
    _, stream = run(api, daemon, image, ["/bin/sh", "-c", script], **config)
    assert stream.close_code == 1000 and stream.close_reason["message"].endswith("exit-code 0"), stream
    return stream.text


def host_ids(pid: int) -> tuple[list[str], list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in lines if line.startswith("Uid:")).split()[1:]
    gid = next(line for line in lines if line.startswith("Gid:")).split()[1:]
    return uid, gid


def test_root_in_the_container_is_not_root_on_the_host(remapped, uapi, image):
    daemon, base = remapped
    cid = create(uapi, image, ["/bin/sleep", "1000"])
    start_detached(uapi, daemon, cid)
    inside = exec_stream(daemon, exec_create(uapi, cid, ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map"]),
                         start_container=False)  # fmt: skip
    assert inside.text.split() == ["0", "0", str(base), str(SIZE)]
    processes = uapi.get(f"/containers/{cid}/top").json()["processes"]
    sleeper = next(p for p in processes if p["command"] == "/bin/sleep 1000")
    assert (sleeper["uid"], sleeper["host_uid"], sleeper["user"]) == (0, base, "root")
    assert host_ids(sleeper["pid"]) == ([str(base)] * 4, [str(base)] * 4)  # seen from the host: not root
    uapi.post(f"/containers/{cid}/stop")
    uapi.delete(f"/containers/{cid}")


def test_files_are_the_same_on_disk_as_without_a_namespace(remapped, uapi, image):
    daemon, _ = remapped
    script = ("touch /made-here; mkdir -p /srv/x; echo v > /data/file; chown 1000:1000 /data/file; "
              "stat -c '%u %g' /etc/passwd /made-here /data /data/file")
    cid, stream = run(uapi, daemon, image, ["/bin/sh", "-c", script],
                      mounts=[{"type": "volume", "source": "uvol", "destination": "/data"}])
    assert stream.text.split() == ["0", "0", "0", "0", "0", "0", "1000", "1000"], stream.text
    upper = daemon.state_root / "containers" / cid / "upper"
    assert (upper / "made-here").stat().st_uid == 0 and (upper / "srv/x").stat().st_uid == 0
    volume = daemon.state_root / "volumes" / "uvol"
    assert (volume / "file").stat().st_uid == 1000 and volume.stat().st_uid == 0
    # A container without a namespace sees the same owners.
    assert sh(uapi, daemon, image, "stat -c '%u' /data/file; id -u", userns="host",
              mounts=[{"type": "volume", "source": "uvol", "destination": "/data"}]).split() == ["1000", "0"]


def test_opt_out_and_update(remapped, uapi, image):
    daemon, _ = remapped
    assert sh(uapi, daemon, image, "cat /proc/self/uid_map", userns="host").split() == ["0", "0", "4294967295"]
    cid = create(uapi, image, ["/bin/sh", "-c", "cat /proc/self/uid_map"], userns="host")
    assert uapi.post(f"/containers/{cid}/update", json={"userns": ""}).status_code == 201
    assert exec_stream(daemon, exec_create(uapi, cid)).text.split()[1] != "0"
    assert uapi.get(f"/containers/{cid}/inspect").json()["container"]["userns"] == ""


def test_own_network_namespace_and_bridge_network(remapped, uapi, image):
    daemon, _ = remapped
    assert sh(uapi, daemon, image, "ls /sys/class/net", network_driver="disabled").split() == ["lo"]
    name = f"un{secrets.token_hex(2)}"
    subnet, _ = subnets(daemon)
    r = uapi.post("/networks/create", json={"name": name, "type": "bridge", "subnet": subnet})
    assert r.status_code == 201, r.text
    cid = create(uapi, image, ["/bin/sh", "-c", "ip -o -4 addr show eth0; id -u; ls /sys/fs/cgroup | wc -l"],
                 network_driver="vnet")  # fmt: skip
    assert uapi.post("/networks/connect", json={"container": cid, "network": name,
                                                  "ip_address": "<auto>"}).status_code == 204
    text = exec_stream(daemon, exec_create(uapi, cid)).text
    assert f"inet {subnet.rsplit('.', 1)[0]}." in text and text.split()[-2:] == ["0", "0"], text  # cgroups hidden
    uapi.delete(f"/containers/{cid}")
    uapi.delete(f"/networks/{name}")


def test_start_refused_without_the_daemon_setting(api, daemon):
    """On the session daemon (no userns_remap) the request is refused at create, in one line."""
    image = create_image(daemon, tag=f"nouserns:{secrets.token_hex(2)}")
    r = api.post("/containers/create", json={"image": image, "userns": "remap"})
    assert r.status_code == 404 and r.json() == {"message": "userns 'remap' needs the daemon setting userns_remap"}


def test_state_dirs_let_only_the_range_through(remapped):
    daemon, base = remapped
    root = daemon.state_root.stat()
    assert (root.st_gid, oct(root.st_mode & 0o777)) == (base, "0o710")
    containers = (daemon.state_root / "containers").stat()
    assert (containers.st_gid, oct(containers.st_mode & 0o777)) == (base, "0o710")
    for private in ("layers", "volumes", "bundles"):
        assert oct((daemon.state_root / private).stat().st_mode & 0o777) == "0o700", private


def test_terminal_and_a_dev_without_devfs(remapped, uapi, image):
    """runc makes /dev/pts inside /dev as the container's root: the nodev dir must be its own."""
    daemon, _ = remapped
    assert sh(uapi, daemon, image, "ls /dev; id -u", jail_param=["mount.nodevfs"]).split() == [
        "mqueue", "null", "ptmx", "pts", "shm", "0"]  # fmt: skip
    cid = create(uapi, image, ["/bin/sleep", "1000"])
    start_detached(uapi, daemon, cid)
    stream = exec_stream(daemon, exec_create(uapi, cid, ["/bin/sh", "-c", "tty; id -u"], tty=True),
                         start_container=False)  # fmt: skip
    assert stream.text.split() == ["/dev/pts/0", "0"], stream.text
    uapi.post(f"/containers/{cid}/stop")
    uapi.delete(f"/containers/{cid}")
