"""Timestamps in upstream's format: ISO 8601, UTC, microseconds, `Z` suffix."""

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso_of(unix_seconds: float) -> str:
    """A unix time in the same format (e.g. a file's mtime)."""
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
