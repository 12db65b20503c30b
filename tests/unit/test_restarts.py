"""Restart policies: parsing, decisions after an exit, the back-off, and the pending restarts."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from kleened.core.restarts import (
    FIRST_DELAY,
    MAX_DELAY,
    RESET_AFTER,
    Pending,
    Policy,
    Restarts,
    next_delay,
    parse_policy,
)


@pytest.mark.parametrize(("text", "policy"), [
    (None, Policy("no")), ("", Policy("no")), ("no", Policy("no")), ("on-startup", Policy("on-startup")),
    ("always", Policy("always")), ("unless-stopped", Policy("unless-stopped")),
    ("on-failure", Policy("on-failure")), ("on-failure:5", Policy("on-failure", 5)),
    ("on-failure:0", Policy("on-failure")),
])
def test_parse(text, policy):
    assert parse_policy(text) == policy


@pytest.mark.parametrize("text", [
    "sometimes", "always:3", "no:1", "on-failure:", "on-failure:-1", "on-failure:x", "on-failure:1.5",
    "on-failure:٣", "on-failure:9999999999", "ON-FAILURE", " always",
])
def test_parse_refuses_with_one_line(text):
    with pytest.raises(ValueError) as info:
        parse_policy(text)
    assert "\n" not in str(info.value) and "restart policy" in str(info.value)


@pytest.mark.parametrize("text", ["no", "on-startup", "always", "unless-stopped", "on-failure", "on-failure:7"])
def test_round_trip(text):
    assert str(parse_policy(text)) == text


def test_upstream_value_is_whether_it_starts_with_the_daemon():
    assert [parse_policy(p).upstream for p in ("no", "on-startup", "always", "unless-stopped", "on-failure:2")] \
        == ["no", "on-startup", "on-startup", "on-startup", "no"]


def test_decisions_after_an_exit():
    assert Policy("always").restarts_after(0, 100) and Policy("unless-stopped").restarts_after(0, 0)
    assert not Policy("no").restarts_after(1, 0) and not Policy("on-startup").restarts_after(1, 0)
    unlimited, three = Policy("on-failure"), Policy("on-failure", 3)
    assert unlimited.restarts_after(1, 1000) and not unlimited.restarts_after(0, 0)
    assert [three.restarts_after(2, n) for n in range(5)] == [True, True, True, False, False]
    assert three.restarts_after(None, 0)  # killed: no exit code is a failure


def test_daemon_start():
    assert Policy("always").starts_with_daemon(True) and Policy("on-startup").starts_with_daemon(True)
    assert Policy("unless-stopped").starts_with_daemon(False) and not Policy("unless-stopped").starts_with_daemon(True)
    assert not Policy("on-failure").starts_with_daemon(False) and not Policy("no").starts_with_daemon(False)


def test_back_off_doubles_to_a_minute_and_resets_after_ten_seconds():
    delays, delay = [], 0.0
    for _ in range(12):
        delay = next_delay(delay, 0.5)
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == MAX_DELAY and all(b == min(a * 2, MAX_DELAY) for a, b in itertools.pairwise(delays))
    assert next_delay(MAX_DELAY, RESET_AFTER) == FIRST_DELAY
    assert next_delay(6.4, RESET_AFTER - 0.01) == 12.8


def run_virtual(main) -> None:
    """Run `main` on a clock that jumps over sleeps: the delays are checked exactly, in no time."""
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_scheduled_restart_runs_after_its_delay_and_cancel_stops_it():
    run_virtual(_scheduled)


async def _scheduled():
    restarts = Restarts()
    fired: list[tuple[str, float]] = []

    async def restart(pending: Pending) -> None:
        if restarts.take(pending):
            fired.append((pending.container_id, trio.current_time()))

    async with trio.open_nursery() as nursery:
        await nursery.start(restarts.run)
        start = trio.current_time()
        assert restarts.schedule("a", 0.0, restart).delay == FIRST_DELAY
        restarts.schedule("b", 0.0, restart)
        assert restarts.is_pending("a") and restarts.cancel("b") and not restarts.cancel("b")
        await trio.sleep(1)
        assert [c for c, _ in fired] == ["a"] and fired[0][1] - start == pytest.approx(FIRST_DELAY)
        assert not restarts.is_pending("a")
        assert restarts.schedule("a", 0.0, restart).delay == 2 * FIRST_DELAY  # doubled
        restarts.reset("a")
        assert not restarts.is_pending("a") and restarts.delay_of("a") == 0.0
        restarts.schedule("c", 0.0, restart)
        assert restarts.close() == [] and not restarts.is_pending("c")
        assert restarts.schedule("d", 0.0, restart) is None  # closed: nothing more
        await trio.sleep(5)
        assert [c for c, _ in fired] == ["a"]
        nursery.cancel_scope.cancel()


def test_a_restart_cancelled_while_it_waits_for_the_lock_does_nothing():
    run_virtual(_cancelled_while_waiting)


async def _cancelled_while_waiting():
    restarts, lock = Restarts(), trio.Lock()
    fired: list[str] = []

    async def restart(pending: Pending) -> None:
        async with lock:
            if restarts.take(pending):
                fired.append(pending.container_id)

    async with trio.open_nursery() as nursery:
        await nursery.start(restarts.run)
        async with lock:  # a stop holds the container's lock while the back-off ends
            restarts.schedule("a", 0.0, restart)
            await trio.sleep(1)
            assert restarts.cancel("a")
        await trio.sleep(1)
        assert fired == []
        nursery.cancel_scope.cancel()
