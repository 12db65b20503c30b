"""Timestamps of log entries and events: RFC 3339, UTC, always nine fraction digits.

Why fixed width (`2024-05-01T12:00:00.000000001Z`, 30 characters): byte-wise comparison of two
stamps is then chronological comparison, so the log reader filters `since`/`until` on the
raw bytes without parsing a date per line.

A *time spec* is what clients send for `since` and `until`: unix seconds as a number or a
decimal string (`1700000000.25`), or RFC 3339 with any fraction and offset. "" means unset.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from .errors import InvalidArgument

STAMP_LEN = 30
NS = 1_000_000_000


class Stamper:
    """Formats `time.time_ns()` fast: the date part is cached per second (one call per chunk)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def now(self) -> tuple[int, bytes]:
        """(nanoseconds since the epoch, the 30-byte stamp)."""
        ns = time.time_ns()
        return ns, self.stamp(ns)

    def stamp(self, ns: int) -> bytes:
        second, fraction = divmod(ns, NS)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return self._prefix + b"%09dZ" % fraction


_stamper = Stamper()


def stamp(ns: int) -> bytes:
    return _stamper.stamp(ns)


def stamp_text(ns: int) -> str:
    return _stamper.stamp(ns).decode()


def parse_time(spec: float | str, what: str) -> int | None:
    """A time spec in nanoseconds since the epoch; None when unset. Raises InvalidArgument."""
    if isinstance(spec, (int, float)):
        return int(spec * NS)
    text = spec.strip()
    if not text:
        return None
    try:
        return int(float(text) * NS) if _numeric(text) else _parse_rfc3339(text)
    except ValueError:
        raise InvalidArgument(
            f"invalid {what} '{spec}': use unix seconds (1700000000.5) or RFC 3339 (2024-05-01T12:00:00Z)"
        ) from None


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).lstrip("-").isdigit()


def _parse_rfc3339(text: str) -> int:
    """RFC 3339 with up to nine fraction digits (datetime keeps six: the rest is added back)."""
    text = text.replace("z", "Z").replace("Z", "+00:00")
    extra_ns = 0
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, offset = rest[:digits], rest[digits:]
        if not fraction:
            raise ValueError(text)
        padded = (fraction + "000000000")[:9]
        extra_ns = int(padded[6:])
        text = f"{head}.{padded[:6]}{offset}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000 + extra_ns
