"""Healthchecks: the check a container gets, the state machine, the monitor's timing, klee's flags."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from klee.errors import UsageError
from klee.health import health_fields
from kleene_protocol.models import HealthcheckConfig, HealthConfig, HealthResult
from kleened.core.errors import Conflict, InvalidArgument
from kleened.core.health import Healthchecks, HealthState, effective, probe_argv

IMAGE = HealthConfig(test=["CMD-SHELL", "wget -q localhost"], interval=10.0, timeout=2.0, retries=4)


def test_the_create_overrides_the_image_field_by_field():
    assert effective(IMAGE, None) == IMAGE
    assert effective(None, None) is None
    merged = effective(IMAGE, HealthcheckConfig(interval=1.0, retries=2))
    assert (merged.test, merged.interval, merged.timeout, merged.retries) == (IMAGE.test, 1.0, 2.0, 2)
    own = effective(None, HealthcheckConfig(test=["CMD", "/bin/true"]))
    assert own == HealthConfig(test=["CMD", "/bin/true"])  # Docker's defaults for the rest
    assert effective(IMAGE, HealthcheckConfig(test=["NONE"])) is None
    assert effective(HealthConfig(test=["NONE"]), None) is None
    assert IMAGE.interval == 10.0  # the image's config is not changed
    zeros = effective(IMAGE, HealthcheckConfig(test=[], interval=0.0, retries=0))  # 0 and [] keep the image's
    assert (zeros.test, zeros.interval, zeros.retries) == (IMAGE.test, 10.0, 4)
    image_zeros = effective(HealthConfig(test=["CMD", "x"], interval=0.0, timeout=0.0, retries=0), None)
    assert (image_zeros.interval, image_zeros.timeout, image_zeros.retries) == (30.0, 30.0, 3)  # the defaults


@pytest.mark.parametrize(("override", "message"), [
    (HealthcheckConfig(test=["SHELL", "x"]), "invalid healthcheck test 'SHELL'"),
    (HealthcheckConfig(test=["CMD"]), "healthcheck CMD requires a command"),
    (HealthcheckConfig(test=["CMD-SHELL", "a", "b"]), "healthcheck CMD-SHELL takes one command string"),
    (HealthcheckConfig(test=["NONE", "x"]), "healthcheck NONE takes no command"),
    (HealthcheckConfig(interval=-1.0), "healthcheck interval must be 0 or between 1ms and a year"),
    (HealthcheckConfig(start_period=0.0001), "healthcheck start-period must be"),
    (HealthcheckConfig(retries=-2), "healthcheck retries must be between"),
])
def test_bad_overrides_are_refused_with_one_line(override, message):
    with pytest.raises(InvalidArgument) as info:
        effective(IMAGE, override)
    assert info.value.message.startswith(message)


def test_probe_argv():
    assert probe_argv(IMAGE, []) == ["/bin/sh", "-c", "wget -q localhost"]
    assert probe_argv(IMAGE, ["/bin/ash", "-e", "-c"]) == ["/bin/ash", "-e", "-c", "wget -q localhost"]
    assert probe_argv(HealthConfig(test=["CMD", "/bin/test", "-e", "/x"]), ["/bin/zsh"]) == ["/bin/test", "-e", "/x"]


def result(code: int) -> HealthResult:
    return HealthResult(start="s", end="e", exit_code=code, output="")


def test_state_machine_is_dockers():
    state = HealthState()
    assert state.status == "starting"
    assert not state.record(result(1), retries=2, in_start_period=True)  # a failure in the start period
    assert state.failing_streak == 0 and state.status == "starting"
    assert not state.record(result(1), retries=2, in_start_period=False)
    assert state.record(result(1), retries=2, in_start_period=False)
    assert (state.status, state.failing_streak) == ("unhealthy", 2)
    assert not state.record(result(-1), retries=2, in_start_period=False) and state.failing_streak == 3
    assert state.record(result(0), retries=2, in_start_period=False)
    assert (state.status, state.failing_streak) == ("healthy", 0)
    for code in range(10):
        state.record(result(code), retries=100, in_start_period=False)
    assert [r.exit_code for r in state.to_api().log] == [5, 6, 7, 8, 9]  # the last 5, oldest first


def test_monitor_probes_at_its_intervals_and_publishes_changes():
    check = HealthConfig(test=["CMD", "x"], interval=10.0, start_period=5.0, start_interval=2.0, retries=2, timeout=1)
    probes: list[float] = []
    published: list[str] = []
    codes = iter([1, 0, 1, 1])

    async def probe(container_id: str, argv: list[str], timeout: float) -> tuple[int, str]:
        probes.append(trio.current_time() - began)
        code = next(codes, None)
        if code is None:
            raise Conflict("container is not running")
        return code, "out"

    async def main() -> None:
        nonlocal began
        checks = Healthchecks(probe, lambda cid, status: published.append(status))
        began = trio.current_time()
        await checks.monitor("c", check, ["x"])
        assert checks.get("c").status == "unhealthy" and checks.get("c").failing_streak == 2
        checks.forget("c")
        assert checks.get("c") is None

    began = 0.0
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # Every start_interval during the start period (its failure does not count), then every interval;
    # the monitor ends when the container no longer runs (the probe at 26 s).
    assert probes == [2.0, 4.0, 6.0, 16.0, 26.0]
    assert published == ["healthy", "unhealthy"]


def flags(**given):
    options = {"health_cmd": None, "no_healthcheck": False, "health_retries": None,
               **{f"health_{d}": None for d in ("interval", "timeout", "start_period", "start_interval")}}
    return health_fields({**options, **given})


def test_klee_flags():
    assert flags() == {}
    assert flags(health_cmd="test -e /ok", health_interval="1m30s", health_retries=0) == {
        "healthcheck": {"test": ["CMD-SHELL", "test -e /ok"], "interval": 90.0, "retries": 0}}
    assert flags(no_healthcheck=True) == {"healthcheck": {"test": ["NONE"]}}
    assert flags(health_timeout="500ms")["healthcheck"] == {"timeout": 0.5}
    for bad in ({"health_interval": "5 minutes"}, {"no_healthcheck": True, "health_cmd": "x"}, {"health_cmd": " "}):
        with pytest.raises(UsageError):
            flags(**bad)
