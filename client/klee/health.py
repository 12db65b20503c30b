"""Docker's healthcheck flags, shared by `create` and `run` (docs/operations.md, "Healthchecks").

| flag                        | body                                               |
|-----------------------------|----------------------------------------------------|
| --health-cmd "CMD"          | healthcheck.test `["CMD-SHELL", CMD]`              |
| --health-interval 30s       | healthcheck.interval (seconds; Go durations: 500ms, 1m30s) |
| --health-timeout 30s        | healthcheck.timeout                                |
| --health-start-period 0s    | healthcheck.start_period                           |
| --health-start-interval 5s  | healthcheck.start_interval                         |
| --health-retries 3          | healthcheck.retries                                |
| --no-healthcheck            | healthcheck.test `["NONE"]` (the image's check is off) |

A flag that is not given leaves its field out (the image's value holds), and with no flag the
body has no `healthcheck` at all, so upstream kleened sees upstream's request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klee.errors import UsageError
from kleene_protocol.durations import parse_duration

DURATIONS = ("interval", "timeout", "start_period", "start_interval")


def health_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The healthcheck flags (see the module table; defined in `klee.options`)."""
    from klee.options import HEALTH, click_options

    return click_options(HEALTH)(function)


def health_fields(options: dict[str, Any]) -> dict[str, Any]:
    """`{"healthcheck": {...}}` with the fields the given flags set; {} when no flag is given."""
    check: dict[str, Any] = {}
    if options["no_healthcheck"]:
        if options["health_cmd"] is not None:
            raise UsageError("Error! --no-healthcheck conflicts with --health-cmd")
        check["test"] = ["NONE"]
    elif options["health_cmd"] is not None:
        if not options["health_cmd"].strip():
            raise UsageError("Error! --health-cmd is empty")
        check["test"] = ["CMD-SHELL", options["health_cmd"]]
    for name in DURATIONS:
        text = options[f"health_{name}"]
        if text is not None:
            try:
                check[name] = parse_duration(text)
            except ValueError as exc:
                raise UsageError(f"Error! --health-{name.replace('_', '-')}: {exc}") from None
    if options["health_retries"] is not None:
        check["retries"] = options["health_retries"]
    return {"healthcheck": check} if check else {}
