"""klee's output: plain tables, JSON and "N minutes ago"."""

from __future__ import annotations

import datetime
import io

import pytest

from klee.printing import Column, Output, Styled, ago, human_duration, render_table

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def test_plain_table_aligns_columns_three_spaces_apart():
    columns = (Column("VOLUME NAME"), Column("CREATED"))
    text = render_table(columns, [["todo-db", "5 minutes ago"], ["a-much-longer-name", "2 days ago"]])
    assert text.splitlines() == [
        "VOLUME NAME          CREATED",
        "todo-db              5 minutes ago",
        "a-much-longer-name   2 days ago",
    ]


def test_plain_table_styles_are_dropped_and_long_cells_cut():
    columns = (Column("ID"), Column("COMMAND", max_width=10), Column("AUTORUN", justify="center"), Column("JID"))
    text = render_table(columns, [["abc", "/bin/sh /etc/rc", Styled("yes", "bold"), ""]])
    assert text.splitlines() == ["ID    COMMAND      AUTORUN   JID", "abc   /bin/sh...     yes"]


def test_empty_table_prints_the_header():
    assert render_table((Column("ID"), Column("NAME")), []) == "ID   NAME\n"


def test_output_plain_mode_json_and_table():
    stream = io.StringIO()
    out = Output(fancy=False, stream=stream)
    out.json({"b": [1], "a": None})
    out.table((Column("X"),), [[Styled("[red]literal", "red")]])
    assert stream.getvalue() == '{\n  "b": [\n    1\n  ],\n  "a": null\n}\nX\n[red]literal\n'


def test_output_fancy_mode_keeps_markup_literal():
    stream = io.StringIO()
    Output(fancy=True, stream=stream).table((Column("NAME", style="bold"),), [["[red]x"]])
    assert "[red]x" in stream.getvalue()
    assert "NAME" in stream.getvalue()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "Less than a second"),
        (1, "1 second"),
        (45, "45 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (5 * 60 + 3, "5 minutes"),
        (59 * 60, "59 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (3 * 365 * 86400, "3 years"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        ("2024-05-01T11:55:00.123456Z", "4 minutes ago"),
        ("2024-05-01T11:55:00Z", "5 minutes ago"),
        ("2024-05-01T11:55:00.12Z", "4 minutes ago"),
        ("2024-05-01T13:55:00+02:00", "5 minutes ago"),
        ("2024-05-01T11:55:00", "5 minutes ago"),
        ("2024-05-01T12:00:05Z", "Less than a second ago"),
        ("yesterday", "yesterday"),
        (None, ""),
    ],
)
def test_ago(timestamp, text):
    assert ago(timestamp, now=NOW) == text
