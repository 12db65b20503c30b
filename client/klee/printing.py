"""Output: tables, JSON, and "5 minutes ago" times.

Two modes. *Fancy* uses rich (colours, a simple box) and is chosen when the theme is `fancy`
and stdout is a terminal. *Plain* prints aligned columns separated by three spaces and
`json.dumps(indent=2)`, so that pipes and scripts get stable text. rich is imported only in
fancy mode.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

if TYPE_CHECKING:
    import datetime


class Styled(NamedTuple):
    """A table cell with a rich style; plain mode prints only `text`."""

    text: str
    style: str = ""


Cell = str | Styled


class Column(NamedTuple):
    header: str
    style: str = ""
    max_width: int | None = None  # longer cells are cut and end with "..." (or "…" in rich)
    justify: str = "left"  # "left" or "center"


class Output:
    """Where a command prints its results."""

    def __init__(self, fancy: bool, stream: TextIO | None = None) -> None:
        self.fancy = fancy
        self.stream = stream or sys.stdout

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, text: str = "") -> None:
        """klee's own status lines ("created execution instance ..."): on stderr, so that stdout
        carries only results and the process's output."""
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def lines(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.line(text)

    def table(self, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> None:
        if self.fancy:
            self._rich_table(columns, rows)
        else:
            self.stream.write(render_table(columns, rows))
            self.stream.flush()

    def json(self, data: Any) -> None:
        text = json.dumps(data, indent=2)
        if self.fancy:
            from rich.console import Console

            Console(file=self.stream).print_json(text)
        else:
            self.line(text)

    def _rich_table(self, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> None:
        from rich import box
        from rich.console import Console
        from rich.measure import Measurement
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE, show_edge=False, header_style="bold")
        for column in columns:
            table.add_column(
                column.header,
                style=column.style or None,
                max_width=column.max_width,
                no_wrap=column.max_width is not None,
                overflow="ellipsis",
                justify=column.justify,  # type: ignore[arg-type]
            )
        for row in rows:
            # Text objects, not markup strings: a name like "[red]x" must print as typed.
            table.add_row(
                *(Text(cell.text, style=cell.style) if isinstance(cell, Styled) else Text(cell) for cell in row)
            )
        console = Console(file=self.stream)
        # Like docker, a table wider than the terminal is printed whole (the terminal wraps it),
        # rather than squeezed until ids and names are cut.
        width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if width > console.width:
            console = Console(file=self.stream, width=width)
        console.print(table)


def render_table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> str:
    """Plain text: a header line and one line per row, columns aligned, 3 spaces apart."""
    texts = [[_cut(_text(cell), column.max_width) for cell, column in zip(row, columns, strict=True)] for row in rows]
    widths = [max([len(column.header)] + [len(row[index]) for row in texts]) for index, column in enumerate(columns)]
    lines = []
    for cells in [[column.header for column in columns], *texts]:
        padded = [
            cell.center(width) if column.justify == "center" else cell.ljust(width)
            for cell, width, column in zip(cells, widths, columns, strict=True)
        ]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines) + "\n"


def _text(cell: Cell) -> str:
    return cell.text if isinstance(cell, Styled) else cell


def _cut(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: width - 3] + "..."


def human_duration(seconds: float) -> str:
    """A rough, human reading of a duration, in the style docker uses for "CREATED"."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    for limit, unit_hours, unit in (
        (24 * 7 * 2, 24, "days"),
        (24 * 30 * 2, 24 * 7, "weeks"),
        (24 * 365 * 2, 24 * 30, "months"),
    ):
        if hours < limit:
            return f"{hours // unit_hours} {unit}"
    return f"{hours // (24 * 365)} years"


def ago(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """`"2024-05-01T10:00:00Z"` -> `"5 minutes ago"`; an unreadable timestamp is shown as is."""
    import datetime  # here: the hot commands never print times

    if not timestamp:
        return ""
    try:
        moment = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return human_duration((now - moment).total_seconds()) + " ago"
