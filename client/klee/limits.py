"""Docker's flags for resource limits and isolation, shared by `create`, `run` and `update`.

| flag                         | body                                            |
|------------------------------|-------------------------------------------------|
| --memory 512m                | resources.memory (bytes; b, k, m, g, t suffixes, powers of 1024) |
| --memory-swap 1g             | resources.memory_swap (memory plus swap; -1: unlimited swap) |
| --cpus 1.5                   | resources.cpus                                  |
| --cpu-shares 512             | resources.cpu_shares                            |
| --pids-limit 100             | resources.pids_limit (-1: no limit)             |
| --ulimit nofile=1024[:2048]  | resources.ulimits (nofile, nproc)               |
| --security-opt seccomp=X     | seccomp: `unconfined`, `default`, or the path of a JSON profile (klee reads it) |
| --userns host|remap          | userns                                          |

`-m` stays upstream's `--mount`; memory is `--memory` only. A flag that is not given leaves
its field out of the body, so upstream kleened sees upstream's request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from klee.errors import UsageError

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
ULIMITS = ("nofile", "nproc")


def parse_size(text: str, flag: str) -> int:
    """`"512m"` -> 536870912 (docker's RAMInBytes); "-1" stays -1 for `--memory-swap`."""
    if text == "-1" and flag == "--memory-swap":
        return -1
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"Error! invalid {flag} '{text}': use a number of bytes with an optional unit (b, k, m, g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_ulimit(text: str) -> dict[str, Any]:
    """`"nofile=1024:2048"` -> `{"name": "nofile", "soft": 1024, "hard": 2048}`; one value is both."""
    name, sep, values = text.partition("=")
    soft, colon, hard = values.partition(":")
    hard = hard if colon else soft
    if not sep or name not in ULIMITS or not soft.isdigit() or not hard.isdigit():
        raise UsageError(f"Error! invalid --ulimit '{text}': use nofile=SOFT[:HARD] or nproc=SOFT[:HARD]")
    return {"name": name, "soft": int(soft), "hard": int(hard)}


def parse_security_opt(options: tuple[str, ...]) -> str | None:
    """The `seccomp` field for `--security-opt seccomp=...`; a profile path is read here."""
    seccomp = None
    for option in options:
        key, sep, value = option.partition("=")
        if key != "seccomp" or not sep or not value:
            raise UsageError(f"Error! unsupported --security-opt '{option}': use seccomp=unconfined|default|PROFILE")
        if value in ("unconfined", "default"):
            seccomp = value
            continue
        try:
            with open(value) as profile:
                seccomp = profile.read()
        except OSError as exc:
            raise UsageError(f"Error! cannot read the seccomp profile '{value}': {exc.strerror}") from None
    return seccomp


def limit_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The resource and isolation flags (see the module table; defined in `klee.options`)."""
    from klee.options import LIMITS, click_options

    return click_options(LIMITS)(function)


def limit_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The body fields the given flags set: `resources`, `seccomp`, `userns` (none when no flag)."""
    resources: dict[str, Any] = {}
    if options["memory"] is not None:
        resources["memory"] = parse_size(options["memory"], "--memory")
    if options["memory_swap"] is not None:
        resources["memory_swap"] = parse_size(options["memory_swap"], "--memory-swap")
    for key in ("cpus", "cpu_shares", "pids_limit"):
        if options[key] is not None:
            resources[key] = options[key]
    if options["ulimit"]:
        resources["ulimits"] = [parse_ulimit(u) for u in options["ulimit"]]
    fields: dict[str, Any] = {"resources": resources} if resources else {}
    seccomp = parse_security_opt(options["security_opt"])
    if seccomp is not None:
        fields["seccomp"] = seccomp
    if options["userns"] is not None:
        fields["userns"] = options["userns"]
    return fields
