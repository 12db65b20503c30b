"""rctl rules from Docker-like limits (platform/freebsd/rctl.py)."""

from __future__ import annotations

import pytest

from kleened.platform.freebsd import rctl
from kleened.platform.freebsd.rctl import Limits


def test_every_limit_maps_to_a_rule():
    limits = Limits(memory=256 * 1024 * 1024, cpus=1.5, pids=100, nofile=1024)
    assert rctl.rules("c1", limits) == [
        "jail:c1:memoryuse:deny=268435456", "jail:c1:pcpu:deny=150", "jail:c1:maxproc:deny=100",
        "jail:c1:openfiles:deny=1024"]
    assert rctl.add_argv("jail:c1:maxproc:deny=100") == ["rctl", "-a", "jail:c1:maxproc:deny=100"]
    assert rctl.remove_argv("c1") == ["rctl", "-r", "jail:c1"]


def test_fractions_of_a_cpu_round_up_to_a_whole_percent():
    assert rctl.rules("c1", Limits(cpus=0.001)) == ["jail:c1:pcpu:deny=1"]
    assert rctl.rules("c1", Limits(cpus=0.25)) == ["jail:c1:pcpu:deny=25"]


def test_no_limits_no_rules():
    assert not Limits()
    assert rctl.rules("c1", Limits()) == []


@pytest.mark.parametrize("kw", [{"memory": 0}, {"pids": -1}, {"nofile": 1.5}, {"cpus": 0}, {"cpus": float("inf")}])
def test_nonsense_limits_are_refused(kw):
    with pytest.raises(ValueError):
        Limits(**kw)


def test_listing():
    text = "jail:c1:maxproc:deny=100\njail:c2:pcpu:deny=50\nuser:1001:maxproc:deny=10\n"
    assert rctl.jails_with_rules(text) == {"c1", "c2"}
