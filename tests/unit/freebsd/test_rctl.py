"""rctl rules from the neutral limits record (platform/freebsd/rctl.py, platform.base.Limits)."""

from __future__ import annotations

import pytest

from kleened.platform.base import Limits
from kleened.platform.freebsd import rctl


def test_every_limit_maps_to_a_rule():
    limits = Limits(memory=256 << 20, memory_swap=512 << 20, cpu_quota=150_000, cpu_period=100_000, pids=100,
                    nofile=(1024, 4096), nproc=(50, 60))
    assert rctl.rules("c1", limits) == [
        "jail:c1:memoryuse:deny=268435456", "jail:c1:swapuse:deny=268435456", "jail:c1:pcpu:deny=150",
        "jail:c1:maxproc:deny=100", "jail:c1:openfiles:deny=4096/process", "jail:c1:maxproc:deny=60/user"]
    assert rctl.add_argv("jail:c1:maxproc:deny=100") == ["rctl", "-a", "jail:c1:maxproc:deny=100"]
    assert rctl.remove_argv("c1") == ["rctl", "-r", "jail:c1"]


def test_cpu_quota_rounds_up_to_a_whole_percent_and_defaults_its_period():
    assert rctl.rules("c1", Limits(cpu_quota=1_000)) == ["jail:c1:pcpu:deny=1"]
    assert rctl.rules("c1", Limits(cpu_quota=25_000, cpu_period=100_000)) == ["jail:c1:pcpu:deny=25"]


def test_swap_without_memory_or_unlimited_gives_no_swap_rule():
    assert rctl.rules("c1", Limits(memory=1 << 20, memory_swap=-1)) == ["jail:c1:memoryuse:deny=1048576"]
    assert rctl.rules("c1", Limits(memory_swap=1 << 20)) == []


def test_no_limits_no_rules():
    assert not rctl.has_limits(Limits())
    assert rctl.has_limits(Limits(pids=1))
    assert rctl.rules("c1", Limits()) == []


def test_cpu_shares_are_refused_not_ignored():
    with pytest.raises(ValueError, match="cpu_shares has no equivalent on FreeBSD"):
        rctl.rules("c1", Limits(cpu_shares=512))


def test_listing():
    text = "jail:c1:maxproc:deny=100\njail:c2:pcpu:deny=50\nuser:1001:maxproc:deny=10\n"
    assert rctl.jails_with_rules(text) == {"c1", "c2"}
