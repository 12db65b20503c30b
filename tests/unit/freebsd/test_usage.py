"""`stats` and `top` on FreeBSD (platform/freebsd/usage.py): the `rctl -u` and `ps -J` command
lines, and their output as FreeBSD prints it mapped onto `Usage` and `ProcessInfo`."""

from __future__ import annotations

import pytest

from kleened.platform.base import Limits, ProcessInfo, Usage
from kleened.platform.freebsd import usage

CID = "c0ffee123456"
# `rctl -u jail:<name>` on FreeBSD 14: every resource, raw numbers.
RCTL_U = """cputime=3
datasize=1134592
stacksize=0
coredumpsize=0
memoryuse=13205504
memorylocked=0
maxproc=2
openfiles=20
vmemoryuse=27451392
pseudoterminals=0
swapuse=0
nthr=2
msgqqueued=0
msgqsize=0
nmsgq=0
nsem=0
nsemop=0
nshm=0
shmsize=0
wallclock=94
pcpu=0
readbps=4096
writebps=0
readiops=1
writeiops=0
"""
# `ps -o pid= -o ppid= -o uid= -o state= -o time= -o rss= -o etimes= -o args= -J <name>`
PS_J = """ 4242  4241    0 Ss   0:00.03  2620   94 /bin/sh -c sleep 1000
 4250  4242   80 S+  61:02.50  1984   12 sleep 1000
 4251  4242   80 Z     0:00.00     0    1
"""


def test_the_command_lines():
    assert usage.usage_argv(CID) == ["rctl", "-u", f"jail:{CID}"]
    assert usage.processes_argv(CID) == ["ps", "-o", "pid=", "-o", "ppid=", "-o", "uid=", "-o", "state=", "-o",
                                         "time=", "-o", "rss=", "-o", "etimes=", "-o", "args=", "-J", CID]
    with pytest.raises(ValueError, match="invalid jail name"):
        usage.usage_argv("1234")  # a number is a jid, not our name


def test_rctl_counters_become_a_usage_sample():
    counters = usage.parse_counters(RCTL_U + "not a counter\n")
    assert (counters["cputime"], counters["readbps"], len(counters)) == (3, 4096, 25)
    assert usage.to_usage(counters, Limits(memory=1 << 30, pids=64)) == Usage(
        cpu_ns=3_000_000_000, memory=13205504, memory_limit=1 << 30, pids=2, pids_limit=64,
        block_read=0, block_write=0, net_rx=None, net_tx=None)
    assert usage.to_usage({}, Limits()).pids_limit is None


@pytest.mark.parametrize(("text", "seconds"), [("0:00.03", 0.03), ("61:02.50", 3662.5), ("1:01:02.50", 3662.5),
                                               ("2-01:00:00.00", 2 * 86400 + 3600)])
def test_ps_cpu_time(text: str, seconds: float):
    assert usage.parse_cputime(text) == pytest.approx(seconds)


def test_ps_lines_become_processes():
    found = usage.parse_processes(PS_J + "garbage\n", now=1000.0)
    assert found[0] == ProcessInfo(pid=4242, ppid=4241, uid=0, host_uid=0, state="S", cpu_seconds=0.03,
                                   rss=2620 * 1024, started=906.0, args=["/bin/sh", "-c", "sleep", "1000"])
    assert (found[1].uid, found[1].state, found[1].cpu_seconds, found[1].args) == (80, "S", 3662.5, ["sleep", "1000"])
    assert (found[2].state, found[2].args) == ("Z", [])  # a zombie has no arguments left
    assert len(found) == 3
