"""Go-style durations (`30s`, `1m30s`, `500ms`, `1.5h`), as Docker's HEALTHCHECK flags take them (the
Dockerfile instruction in the builder, `--health-*` in klee)."""

from __future__ import annotations

import re

_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MINIMUM = 0.001  # seconds: Docker refuses shorter non-zero durations
MAXIMUM = 365 * 24 * 3600.0


def parse_duration(text: str) -> float:
    """Seconds in `text`; "0" is zero. Raises ValueError with a message for the build log."""
    value = text.strip()
    if value == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(value):
        m = _PART.match(value, pos)
        if m is None:
            raise ValueError(f"invalid duration '{text[:32]}' (like 30s, 1m30s, 500ms)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not value:
        raise ValueError("empty duration")
    if total and total < MINIMUM:
        raise ValueError(f"duration '{text[:32]}' is shorter than 1ms")
    if total > MAXIMUM:
        raise ValueError(f"duration '{text[:32]}' is longer than a year")
    return total
