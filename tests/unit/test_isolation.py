"""Core's isolation rules: where limits come from, what is refused, how updates merge; plus
the pure parsers of the Linux side (subordinate id ranges, cgroup and /proc files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kleene_protocol.models import ContainerConfig, Resources, Ulimit
from kleened.core.errors import Conflict, InvalidArgument
from kleened.core.isolation import Isolation, merge_resources
from kleened.core.records import ContainerRecord
from kleened.platform.base import Limits, UserNamespace
from kleened.platform.linux import bundle, idmap, usage
from kleened.platform.linux.security import Security

MIB = 1 << 20


class PureRuntime:
    """The runtime's pure checks (jail parameters, seccomp settings); nothing here runs."""

    def __init__(self, tmp: Path) -> None:
        self._security = Security(tmp)

    def check_params(self, params):
        return bundle.check_params(params)

    def check_seccomp(self, profile):
        return self._security.check_seccomp(profile)


@pytest.fixture
def isolation(tmp_path: Path) -> Isolation:
    return Isolation(PureRuntime(tmp_path))  # type: ignore[arg-type]


def record(resources: Resources | None = None, jail_param: list[str] | None = None, **kw) -> ContainerRecord:
    return ContainerRecord(id="c1", name=None, image_id="i1", cmd=None, user="", env=[], jail_param=jail_param or [],
                           network_driver="host", public_ports=[], restart_policy="no", persist=False, created="",
                           dataset="", resources=resources or Resources(), **kw)  # fmt: skip


def test_nothing_set_gives_the_default_pids_limit_only(isolation: Isolation) -> None:
    assert isolation.limits(Resources(), {}) == Limits(pids=2048)
    assert Isolation(isolation._runtime, default_pids_limit=0).limits(Resources(), {}) == Limits()


def test_fields_win_over_jail_parameters(isolation: Isolation) -> None:
    params = bundle.check_params(["linux.memory=64m", "linux.pids=10", "linux.cpus=0.5"])
    assert isolation.limits(Resources(), params) == Limits(memory=64 * MIB, memory_swap=64 * MIB, cpu_quota=50_000,
                                                           cpu_period=100_000, pids=10)  # fmt: skip
    given = Resources(memory=32 * MIB, cpus=2, cpu_period=50_000, pids_limit=-1, cpu_shares=256,
                      ulimits=[Ulimit(name="nofile", soft=10, hard=20)])  # fmt: skip
    assert isolation.limits(given, params) == Limits(memory=32 * MIB, memory_swap=64 * MIB, cpu_quota=100_000,
                                                     cpu_period=50_000, cpu_shares=256, pids=None, nofile=(10, 20))


@pytest.mark.parametrize(("swap", "expected"), [(None, 128 * MIB), (-1, -1), (96 * MIB, 96 * MIB)])
def test_swap_follows_docker(isolation: Isolation, swap: int | None, expected: int) -> None:
    assert isolation.limits(Resources(memory=64 * MIB, memory_swap=swap), {}).memory_swap == expected


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (Resources(memory=MIB), "at least 6291456 bytes"),
        (Resources(memory_swap=MIB), "needs a memory limit"),
        (Resources(memory=64 * MIB, memory_swap=32 * MIB), "at least memory"),
        (Resources(cpus=0.001), "between 0.01 and"),
        (Resources(cpus=10_000), "between 0.01 and"),
        (Resources(cpu_period=10), "between 1000 and 1000000"),
        (Resources(cpu_shares=1), "between 2 and 262144"),
        (Resources(pids_limit=-5), "pids_limit must be positive"),
        (Resources(ulimits=[Ulimit(name="nofile", soft=2, hard=1)]), "soft limit"),
        (Resources(ulimits=[Ulimit(name="nofile", soft=1, hard=1 << 30)]), "at most"),
        (Resources(ulimits=[Ulimit(name="nproc", soft=1, hard=1), Ulimit(name="nproc", soft=1, hard=1)]), "once"),
    ],
)
def test_create_refuses_bad_limits(isolation: Isolation, resources: Resources, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        isolation.check_create(ContainerConfig(image="x", resources=resources))


def test_create_checks_seccomp_and_userns(isolation: Isolation) -> None:
    assert isolation.check_create(ContainerConfig(image="x", seccomp="unconfined"))[1] == "unconfined"
    with pytest.raises(InvalidArgument, match="'default', 'unconfined' or a JSON profile"):
        isolation.check_create(ContainerConfig(image="x", seccomp="/etc/profile.json"))
    with pytest.raises(InvalidArgument, match="invalid seccomp profile"):
        isolation.check_create(ContainerConfig(image="x", seccomp='{"syscalls": 1}'))
    with pytest.raises(InvalidArgument, match="needs the daemon setting userns_remap"):
        isolation.check_create(ContainerConfig(image="x", userns="remap"))


def test_update_merges_and_removes() -> None:
    stored = Resources(memory=64 * MIB, cpus=1.0, pids_limit=10, ulimits=[Ulimit(name="nofile", soft=1, hard=2)])
    merged = merge_resources(stored, Resources(memory=0, pids_limit=0, ulimits=[], cpu_shares=100))
    assert merged == Resources(memory=None, cpus=1.0, pids_limit=-1, ulimits=None, cpu_shares=100)
    assert merge_resources(stored, Resources()) == stored


async def _update(isolation: Isolation, rec: ContainerRecord, **kw) -> None:
    from kleene_protocol.models import ContainerUpdate

    await isolation.update(rec, ContainerUpdate(**kw), running=False)


def test_update_of_a_stopped_container_is_stored(isolation: Isolation) -> None:
    import trio

    rec = record(Resources(memory=64 * MIB))
    trio.run(lambda: _update(isolation, rec, resources=Resources(pids_limit=5), seccomp="unconfined", userns="host"))
    assert rec.resources == Resources(memory=64 * MIB, pids_limit=5)
    assert (rec.seccomp, rec.userns) == ("unconfined", "host")
    with pytest.raises(Conflict, match=r"^an error ocurred while updating the container: memory limit must be"):
        trio.run(lambda: _update(isolation, rec, resources=Resources(memory=5)))


def test_effective_resources_show_what_is_in_force(isolation: Isolation) -> None:
    rec = record(Resources(cpus=1.5), jail_param=["linux.memory=64m"])
    assert isolation.effective(rec) == Resources(memory=64 * MIB, memory_swap=64 * MIB, cpus=1.5, cpu_period=100_000,
                                                 pids_limit=2048)  # fmt: skip
    assert isolation.effective(record(Resources(pids_limit=-1))).pids_limit == -1


def test_spec_fields(isolation: Isolation) -> None:
    rec = record(jail_param=["linux.seccomp=unconfined"])
    assert isolation.spec_fields(rec)["seccomp"] == "unconfined"
    rec.seccomp = "default"
    assert isolation.spec_fields(rec) == {"limits": Limits(pids=2048), "seccomp": "default", "userns": None}


# --- Linux parsers -------------------------------------------------------------------------------


def test_subordinate_ranges(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("someone:1:2\nroot:100000:65536\nroot:300000:65536\n")
    (tmp_path / "subgid").write_text("0:200000:70000\n")
    assert idmap.parse_remap("root", tmp_path) == UserNamespace(uid_base=100000, gid_base=200000, size=65536)
    assert idmap.parse_remap("165536:165536:65536") == UserNamespace(165536, 165536, 65536)
    for value, message in [("root:nosuchgroup", "no such user or group"), ("1:2:3:4", "USER\\[:GROUP\\]"),
                           ("100000:100000:100", "a container needs 65536"), ("0:0:65536", "start above 0")]:
        with pytest.raises(idmap.RangeError, match=message):
            idmap.parse_remap(value, tmp_path)
    (tmp_path / "subgid").write_text("")
    with pytest.raises(idmap.RangeError, match="has no range in"):
        idmap.parse_remap("root", tmp_path)


def test_idmapped_mount_mapping_keeps_host_root_writable() -> None:
    assert idmap.mapping_of(UserNamespace(100000, 200000, 65536), "gid") == "0 200000 65536\n4294967294 0 1\n"


def test_cgroup_v1_and_v2_counters(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    v1.mkdir()
    for name, text in {"cpuacct.usage": "1500\n", "memory.usage_in_bytes": "10000\n",
                       "memory.stat": "cache 5\ntotal_inactive_file 4000\n",
                       "memory.limit_in_bytes": "9223372036854771712\n", "pids.current": "3\n", "pids.max": "max\n",
                       "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                       "blkio.throttle.io_service_bytes_recursive": "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\n"
                                                                    "Total 150\n"}.items():  # fmt: skip
        (v1 / name).write_text(text)
    u = usage.read_usage({"memory": v1, "cpuacct": v1, "pids": v1, "blkio": v1}, os.getpid())
    assert u is not None
    assert (u.cpu_ns, u.memory, u.memory_limit, u.pids, u.pids_limit) == (1500, 6000, None, 3, None)
    assert (u.block_read, u.block_write, u.net_rx) == (100, 50, None)  # this process: the host's network
    assert usage.oom_kills({"memory": v1}) == 2
    v2 = tmp_path / "v2"
    v2.mkdir()
    for name, text in {"cpu.stat": "usage_usec 7\nuser_usec 5\n", "memory.current": "8192\n",
                       "memory.stat": "inactive_file 192\n", "memory.max": "1048576\n", "pids.current": "1\n",
                       "pids.max": "20\n", "memory.events": "oom 1\noom_kill 1\n",
                       "io.stat": "8:0 rbytes=10 wbytes=20 rios=1\n8:16 rbytes=1 wbytes=2\n"}.items():  # fmt: skip
        (v2 / name).write_text(text)
    u = usage.read_usage({"": v2}, os.getpid())
    assert u is not None
    assert (u.cpu_ns, u.memory, u.memory_limit, u.pids_limit, u.block_read, u.block_write) == (7000, 8000, 1048576,
                                                                                              20, 11, 22)
    assert usage.oom_kills({"": v2}) == 1
    assert usage.read_usage({}, os.getpid()) is None


def test_process_info_of_this_process() -> None:
    me = usage.process_info(os.getpid(), 0, 2**32)
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid()
    assert me.uid == me.host_uid == os.getuid() and me.rss > 0 and me.state in "RS"
    shifted = usage.process_info(os.getpid(), os.getuid() + 1, 10)
    assert shifted is not None and shifted.uid == 65534  # outside the range: nobody
    assert usage.process_info(2**22 + 12345, 0, 1) is None
