"""Seccomp and resource limits of containers, against a real kleened, real runc and the host's
cgroups (v1 here): what a container sees inside, what the kernel's files say outside."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path

import pytest

from kleened.platform.linux import cgroups
from tests.conftest import require_root_runtime
from tests.daemon import Daemon, new_prefix, running_daemon
from tests.integration.test_containers import create, exec_create, run, start_detached
from tests.integration.test_klee import run_klee
from tests.wsapi import collect, connect, create_image, exec_stream

MIB = 1 << 20
UNLIMITED_V1 = "9223372036854771712"  # what a cgroup v1 limit file shows for "no limit"
BLOCK_MKDIR = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"isobox:{secrets.token_hex(3)}")


def sh(api, daemon, image: str, script: str, **config) -> tuple[str, str]:
    """Run `script` in a new container; return (container id, its output)."""
    cid, stream = run(api, daemon, image, ["/bin/sh", "-c", script], **config)
    assert stream.close_code == 1000, stream
    return cid, stream.text


def in_running(api, daemon, cid: str, script: str) -> str:
    stream = exec_stream(daemon, exec_create(api, cid, ["/bin/sh", "-c", script]), start_container=False)
    assert stream.close_code == 1000, stream
    return stream.text


def cgroup_file(daemon: Daemon, cid: str, controller: str, name: str) -> str:
    return (cgroups.controller_dirs(f"{daemon.prefix}/{cid}")[controller] / name).read_text().strip()


SECCOMP_PROBE = ("grep Seccomp: /proc/self/status; unshare -U -r true 2>&1; echo unshare=$?; "
                 "mount -t tmpfs t /mnt 2>&1; echo mount=$?")


# --- seccomp ------------------------------------------------------------------------------------


def test_default_profile_in_the_container_and_in_execs(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"])
    start_detached(api, daemon, cid)
    for text in (sh(api, daemon, image, SECCOMP_PROBE)[1], in_running(api, daemon, cid, SECCOMP_PROBE)):
        assert "Seccomp:\t2" in text
        assert "unshare(0x10000000): Operation not permitted" in text and "unshare=1" in text
        assert "mount=0" not in text
    api.post(f"/containers/{cid}/stop")
    api.delete(f"/containers/{cid}")


def test_ordinary_workloads_run_under_the_default_profile(api, daemon, image):
    script = ("set -e; ls -l / >/dev/null; ps >/dev/null; echo b a b | tr ' ' '\\n' | sort | uniq | wc -l; "
              "mkdir -p /tmp/t && cd /tmp/t && echo data > f && tar czf /tmp/a.tgz . && tar tzf /tmp/a.tgz | wc -l; "
              "gzip -c f | gunzip; find / -xdev -name passwd | head -1; linux32 uname -m; "
              "(sleep 0.1 & wait); chown 1000:1000 f; su -s /bin/sh -c 'id -u' user1; nc -l -p 7 -e true & kill $!; "
              "date +%Y >/dev/null; echo done")
    _, text = sh(api, daemon, image, script)
    assert text.split() == ["2", "2", "data", "/etc/passwd", "i686", "1000", "done"], text


def test_unconfined_by_field_and_by_jail_parameter(api, daemon, image):
    for config in ({"seccomp": "unconfined"}, {"jail_param": ["linux.seccomp=unconfined"]}):
        _, text = sh(api, daemon, image, SECCOMP_PROBE, **config)
        assert "Seccomp:\t0" in text and "unshare=0" in text, (config, text)


def test_custom_profile(api, daemon, image):
    cid, text = sh(api, daemon, image, "mkdir /x 2>&1; echo mkdir=$?; touch /y && echo touched", seccomp=BLOCK_MKDIR)
    assert "Permission denied" in text and "mkdir=1" in text and "touched" in text
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["seccomp"] == BLOCK_MKDIR
    r = api.post("/containers/create", json={"image": image, "seccomp": '{"defaultAction": "SCMP_ACT_LOUD"}'})
    assert r.status_code == 404 and r.json()["message"].startswith("invalid seccomp profile: ")


def test_host_wide_profile_from_the_config():
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-test-") as tmp:
        profile = Path(tmp) / "profile.json"
        profile.write_text(BLOCK_MKDIR)
        with running_daemon(Path(tmp) / "d", extra={"seccomp_profile": str(profile)}) as daemon, daemon.client() as api:
            image = create_image(daemon, tag="hostwide")
            _, text = sh(api, daemon, image, "mkdir /x 2>&1; echo mkdir=$?")
            assert "mkdir=1" in text
            _, text = sh(api, daemon, image, "mkdir /x && grep Seccomp: /proc/self/status", seccomp="default")
            assert "Seccomp:\t2" in text
        profile.write_text('{"defaultAction": 1}')
        broken = Daemon(workdir=Path(tmp) / "broken", prefix=new_prefix(), extra={"seccomp_profile": str(profile)})
        broken.workdir.mkdir()
        with pytest.raises(RuntimeError, match="kleened exited with 1"):
            broken.start(timeout=10)
        assert f"kleened: seccomp_profile '{profile}': invalid seccomp profile: Expected `str`" in broken.log()


# --- limits ---------------------------------------------------------------------------------------


def test_limits_reach_the_cgroups_and_change_live(api, daemon, image):
    resources = {"memory": 64 * MIB, "memory_swap": -1, "cpus": 0.5, "cpu_shares": 512, "pids_limit": 64,
                 "ulimits": [{"name": "nofile", "soft": 100, "hard": 200}, {"name": "nproc", "soft": 30, "hard": 40}]}
    cid = create(api, image, ["/bin/sleep", "1000"], resources=resources)
    start_detached(api, daemon, cid)
    assert cgroup_file(daemon, cid, "memory", "memory.limit_in_bytes") == str(64 * MIB)
    assert cgroup_file(daemon, cid, "memory", "memory.memsw.limit_in_bytes") == UNLIMITED_V1
    assert cgroup_file(daemon, cid, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(daemon, cid, "cpu", "cpu.shares") == "512"
    assert cgroup_file(daemon, cid, "pids", "pids.max") == "64"
    assert in_running(api, daemon, cid, "ulimit -n; ulimit -Hn; ulimit -u").split() == ["100", "200", "30"]
    r = api.post(f"/containers/{cid}/update", json={"resources": {"memory": 128 * MIB, "cpus": 1, "pids_limit": 0,
                                                                  "cpu_shares": 0}})
    assert r.status_code == 201, r.text
    assert cgroup_file(daemon, cid, "memory", "memory.limit_in_bytes") == str(128 * MIB)
    assert cgroup_file(daemon, cid, "cpu", "cpu.cfs_quota_us") == "100000"
    assert cgroup_file(daemon, cid, "cpu", "cpu.shares") == "1024"
    assert cgroup_file(daemon, cid, "pids", "pids.max") == "max"
    shown = api.get(f"/containers/{cid}/inspect").json()["container"]["resources"]
    assert shown == {**resources, "memory": 128 * MIB, "cpus": 1.0, "cpu_period": 100_000, "cpu_shares": None,
                     "pids_limit": -1}
    r = api.post(f"/containers/{cid}/update", json={"resources": {"memory": 2 * MIB}})
    assert r.status_code == 409 and "at least 6291456 bytes" in r.json()["message"]
    api.post(f"/containers/{cid}/stop")
    r = api.post(f"/containers/{cid}/update", json={"resources": {"pids_limit": 33}})  # stored: next start
    assert r.status_code == 201
    start_detached(api, daemon, cid)
    assert cgroup_file(daemon, cid, "pids", "pids.max") == "33"
    api.post(f"/containers/{cid}/stop")
    api.delete(f"/containers/{cid}")


def test_default_pids_limit_and_a_fork_bomb_that_stops(api, daemon, image):
    cid = create(api, image, ["/bin/sleep", "1000"])
    start_detached(api, daemon, cid)
    assert cgroup_file(daemon, cid, "pids", "pids.max") == "2048"
    api.post(f"/containers/{cid}/stop")
    # 40 children at once under a limit of 20 tasks: xargs cannot fork them all and gives up,
    # the shell (which must not fork any more: only builtins below) reports it and exits.
    bomb = ("seq 40 | xargs -n1 -P40 sleep 5 2>/tmp/err; echo xargs=$?; "
            "read -r first </tmp/err; echo \"$first\"")
    _, text = sh(api, daemon, image, bomb, resources={"pids_limit": 20})
    assert text.splitlines() == ["xargs=126", "xargs: sleep: Resource temporarily unavailable"], text


def test_memory_limit_kills_and_the_kill_is_recorded(api, daemon, image):
    since = time.time()
    cid, stream = run(api, daemon, image, ["/bin/sh", "-c", "a=x; while :; do a=$a$a; done"],
                      resources={"memory": 16 * MIB})
    assert stream.close_reason["message"].endswith("exited with exit-code 137")
    container = api.get(f"/containers/{cid}/inspect").json()["container"]
    assert container["oom_killed"] is True and container["exit_code"] == 137
    with connect(daemon, "/events") as events:
        events.send(json.dumps({"since": since, "until": time.time(), "filters": {"object": [cid]}}))
        actions = [json.loads(f)["action"] for f in collect(events, 10).frames[1:]]
    assert actions[-2:] == ["oom", "die"]
    api.post(f"/containers/{cid}/update", json={"cmd": ["/bin/true"]})
    exec_stream(daemon, exec_create(api, cid))
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["oom_killed"] is False


def test_bad_settings_are_one_line_errors(api, daemon, image):
    for body, message in [
        ({"resources": {"memory": 1}}, "memory limit must be at least 6291456 bytes (6 MiB)"),
        ({"resources": {"ulimits": [{"name": "core", "soft": 1, "hard": 1}]}}, "invalid request body"),
        ({"seccomp": "/tmp/x.json"}, "seccomp must be 'default', 'unconfined' or a JSON profile"),
        ({"userns": "remap"}, "userns 'remap' needs the daemon setting userns_remap"),
        ({"jail_param": ["linux.seccomp=off"]}, "jail parameter 'linux.seccomp' expects 'default' or 'unconfined'"),
    ]:
        r = api.post("/containers/create", json={"image": image, **body})
        assert r.status_code in (404, 422) and message in r.json()["message"], (body, r.text)
        assert "\n" not in r.json()["message"]


def test_klee_flags(daemon, image, tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(BLOCK_MKDIR)
    r = run_klee(daemon.host, "run", "--rm", "--ulimit", "nofile=50:60", "--pids-limit", "10", "--memory", "32m",
                 "--security-opt", f"seccomp={profile}", image, "/bin/sh", "-c",
                 "ulimit -n; mkdir /x 2>/dev/null || echo refused")
    assert r.returncode == 0 and r.lines == ["50", "refused"], r
    name = f"k{secrets.token_hex(3)}"
    r = run_klee(daemon.host, "run", "-d", "--name", name, "--cpus", "0.25", image, "/bin/sleep", "100")
    assert r.returncode == 0, r
    cid = run_klee(daemon.host, "container", "inspect", name)
    cid = json.loads(cid.stdout)["container"]["id"]
    assert cgroup_file(daemon, cid, "cpu", "cpu.cfs_quota_us") == "25000"
    assert run_klee(daemon.host, "container", "update", "--cpus", "1.5", name).lines == [cid]
    assert cgroup_file(daemon, cid, "cpu", "cpu.cfs_quota_us") == "150000"
    bad = run_klee(daemon.host, "container", "update", "--memory", "1", name)
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1 and "at least 6291456 bytes" in bad.stderr
    run_klee(daemon.host, "rmc", "-f", name)
