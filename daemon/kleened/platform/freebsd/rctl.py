"""A container's resource limits (`platform.base.Limits`, the record the Linux driver maps to
cgroups) as rctl(8) rules on its jail.

| `Limits` field            | rctl rule                                       |
|---------------------------|-------------------------------------------------|
| `memory`                  | `jail:<name>:memoryuse:deny=<bytes>`            |
| `memory_swap` (mem+swap)  | `jail:<name>:swapuse:deny=<memory_swap-memory>` |
| `cpu_quota`/`cpu_period`  | `jail:<name>:pcpu:deny=<percent>`               |
| `pids`                    | `jail:<name>:maxproc:deny=<n>`                  |
| `nofile` (soft, hard)     | `jail:<name>:openfiles:deny=<hard>/process`     |
| `nproc` (soft, hard)      | `jail:<name>:maxproc:deny=<hard>/user`          |

`pcpu:deny` throttles (rctl(8)), so a quota of 1.5 CPUs is 150 %. `pids` counts processes, not
threads as on Linux. Per-process and per-user limits use rctl's `/process` and `/user`: rctl has
no soft limits, so the hard one applies. `cpu_shares` (a relative weight) has no rctl
equivalent and is refused rather than ignored.

rctl needs `kern.racct.enable=1` in /boot/loader.conf (a boot-time tunable): upstream only
printed a hint at `init` and limits silently did nothing; here a limit on a host without racct
is refused with that hint. Rules outlive their jail, so they are removed when the jail is.
"""

from __future__ import annotations

import math

from kleened.platform.base import Limits

RACCT_ARGV = ["sysctl", "-n", "kern.racct.enable"]
RACCT_HINT = ("resource limits need rctl: set kern.racct.enable=1 in /boot/loader.conf and reboot "
              "(this host has kern.racct.enable=0)")


def has_limits(limits: Limits) -> bool:
    return any(getattr(limits, name) is not None for name in Limits.__dataclass_fields__)


def rules(jail: str, limits: Limits) -> list[str]:
    """The rules for `limits` (none when unlimited). Raises ValueError for what rctl cannot do."""
    if limits.cpu_shares is not None:
        raise ValueError("cpu_shares has no equivalent on FreeBSD (rctl limits CPU with a quota: use cpus)")
    subject = f"jail:{jail}"
    out = []
    if limits.memory is not None:
        out.append(f"{subject}:memoryuse:deny={limits.memory}")
        if limits.memory_swap is not None and limits.memory_swap >= limits.memory:
            out.append(f"{subject}:swapuse:deny={limits.memory_swap - limits.memory}")
    if limits.cpu_quota is not None:
        period = limits.cpu_period or 100_000
        out.append(f"{subject}:pcpu:deny={max(1, math.ceil(limits.cpu_quota * 100 / period))}")
    if limits.pids is not None:
        out.append(f"{subject}:maxproc:deny={limits.pids}")
    if limits.nofile is not None:
        out.append(f"{subject}:openfiles:deny={limits.nofile[1]}/process")
    if limits.nproc is not None:
        out.append(f"{subject}:maxproc:deny={limits.nproc[1]}/user")
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
