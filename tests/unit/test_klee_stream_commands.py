"""klee attach/logs/events helpers: times, event lines, and usage errors before any request."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from klee.cli import cli
from klee.commands.streams import format_event, time_spec
from klee.session import Session


@pytest.mark.parametrize(("text", "expected"), [
    (None, ""), ("", ""), ("10m", "999400.000000000"), ("1h30m", "994600.000000000"), ("1.5s", "999998.500000000"),
    ("250ms", "999999.750000000"), ("2d", "827200.000000000"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"), ("1714564800", "1714564800"),
])
def test_time_specs_turn_durations_into_unix_seconds(text, expected):
    assert time_spec(text, now=1_000_000.0) == expected


def test_event_lines_are_dockers():
    event = {"time": "2024-05-01T12:00:00.000000001Z", "type": "container", "action": "die", "id": "abc",
             "attributes": {"name": "web", "exit_code": "0"}}
    assert format_event(event) == "2024-05-01T12:00:00.000000001Z container die abc (exit_code=0, name=web)"
    assert format_event({**event, "attributes": {}}).endswith("container die abc")


@pytest.mark.parametrize(("args", "message"), [
    (["logs", "--tail", "ten", "c1"], "invalid --tail 'ten'"),
    (["events", "--filter", "nokey"], "invalid filter 'nokey'"),
])
def test_usage_errors_before_any_connection(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    session = Session(flags={"host": f"http://{tmp_path}/missing.sock"}, environ={})
    result = CliRunner().invoke(cli, args, obj=session)
    assert message in str(result.exception.message if hasattr(result.exception, "message") else result.output)
