"""Process environments: `KEY=value` lists merged as upstream does (later lists win)."""

from __future__ import annotations

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def merge_env(*layers: list[str] | None) -> list[str]:
    """Merge `KEY=value` lists; a later layer's value replaces an earlier one in place."""
    merged: dict[str, str] = {}
    for layer in layers:
        for entry in layer or []:
            key, sep, value = entry.partition("=")
            if not key:
                continue
            merged[key] = value if sep else ""
    return [f"{k}={v}" for k, v in merged.items()]


def login_env(*, user: str, home: str, cwd: str, tty: bool) -> list[str]:
    """What a login shell would set, as `jexec -l` gives upstream containers."""
    env = [f"PATH={DEFAULT_PATH}", f"HOME={home}", f"USER={user}", f"PWD={cwd}"]
    if tty:
        env.append("TERM=xterm")
    return env


def validate_env(entries: list[str]) -> str | None:
    """The first malformed entry's error, or None."""
    for entry in entries:
        key, sep, _ = entry.partition("=")
        if not sep or not key or "\0" in entry:
            return f"invalid environment variable '{entry}': use NAME=value"
    return None
