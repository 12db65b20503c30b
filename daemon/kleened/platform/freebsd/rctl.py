"""Resource limits of a jail as rctl(8) rules, from a neutral, Docker-like limits record.

| `Limits` field | Docker            | rctl rule                               |
|----------------|-------------------|-----------------------------------------|
| `memory`       | `--memory` bytes  | `jail:<name>:memoryuse:deny=<bytes>`    |
| `cpus`         | `--cpus` float    | `jail:<name>:pcpu:deny=<percent>`       |
| `pids`         | `--pids-limit`    | `jail:<name>:maxproc:deny=<n>`          |
| `nofile`       | `--ulimit nofile` | `jail:<name>:openfiles:deny=<n>`        |

`pcpu:deny` throttles (rctl(8): "deny" on pcpu slows the jail down), so `cpus=1.5` is 150 %.
rctl needs `kern.racct.enable=1` in /boot/loader.conf (a boot-time tunable): upstream only
printed a hint at `init` and limits silently did nothing; here a limit on a host without racct
is refused with that hint. Rules outlive their jail, so they are removed when the jail is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RACCT_ARGV = ["sysctl", "-n", "kern.racct.enable"]
RACCT_HINT = ("resource limits need rctl: set kern.racct.enable=1 in /boot/loader.conf and reboot "
              "(this host has kern.racct.enable=0)")


@dataclass(frozen=True)
class Limits:
    """Docker-like limits; None is unlimited."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # CPUs, e.g. 0.5
    pids: int | None = None  # processes
    nofile: int | None = None  # open files

    def __post_init__(self) -> None:
        for name in ("memory", "pids", "nofile"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"invalid {name} limit {value!r}: a positive whole number is needed")
        if self.cpus is not None and not (self.cpus > 0 and math.isfinite(self.cpus)):
            raise ValueError(f"invalid cpus limit {self.cpus!r}: a positive number is needed")

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids, self.nofile))


def rules(jail: str, limits: Limits) -> list[str]:
    subject = f"jail:{jail}"
    out = []
    if limits.memory is not None:
        out.append(f"{subject}:memoryuse:deny={limits.memory}")
    if limits.cpus is not None:
        out.append(f"{subject}:pcpu:deny={max(1, math.ceil(limits.cpus * 100))}")
    if limits.pids is not None:
        out.append(f"{subject}:maxproc:deny={limits.pids}")
    if limits.nofile is not None:
        out.append(f"{subject}:openfiles:deny={limits.nofile}")
    return out


def add_argv(rule: str) -> list[str]:
    return ["rctl", "-a", rule]


def remove_argv(jail: str) -> list[str]:
    """Every rule whose subject is the jail (a filter, as rctl(8) takes it)."""
    return ["rctl", "-r", f"jail:{jail}"]


LIST_ARGV = ["rctl"]


def parse_rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def jails_with_rules(text: str) -> set[str]:
    """The jail names that have rules in `rctl`'s listing."""
    return {rule.split(":")[1] for rule in parse_rules(text) if rule.startswith("jail:") and rule.count(":") >= 3}
