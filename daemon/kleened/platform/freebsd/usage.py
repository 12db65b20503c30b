"""A jail's counters for `stats` (`rctl -u`) and its processes for `top` (`ps -J`), as data:
the command lines and parsers of their output.

`rctl -u jail:<name>` prints one `resource=value` per line, raw numbers (no `-h`), what racct
counts for the jail's processes. Onto `platform.base.Usage`:

| `Usage` field          | from                                                         |
|------------------------|--------------------------------------------------------------|
| `cpu_ns`               | `cputime` (whole seconds: the CPU percent is coarse)         |
| `memory`               | `memoryuse` (resident bytes)                                 |
| `pids`                 | `maxproc` (processes in the jail now)                        |
| `memory_limit`, `pids_limit` | the container's `Limits` (its rctl rules)              |
| `block_read`/`block_write` | 0: racct has only rates (`readbps`, `writebps`), no totals |
| `net_rx`/`net_tx`      | None: not counted (a vnet jail's epair counters are not read) |

`ps -J <name>` with one `-o keyword=` per column (empty headers) and `args` last, since it may
hold spaces: pid, ppid, uid (a jail has no user namespace: the uid is the host's too), state,
`time` (CPU as `[hh:]mm:ss.cc`), rss (KiB) and `etimes` (seconds since it started).
"""

from __future__ import annotations

from kleened.platform.base import Limits, ProcessInfo, Usage

from .jail import check_name

PS_COLUMNS = ("pid", "ppid", "uid", "state", "time", "rss", "etimes", "args")


def usage_argv(name: str) -> list[str]:
    return ["rctl", "-u", f"jail:{check_name(name)}"]


def processes_argv(name: str) -> list[str]:
    columns = [arg for column in PS_COLUMNS for arg in ("-o", f"{column}=")]
    return ["ps", *columns, "-J", check_name(name)]


def parse_counters(text: str) -> dict[str, int]:
    """`resource=value` lines -> resource -> value (a line that is not one is skipped)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and value.isdigit():
            found[key] = int(value)
    return found


def to_usage(counters: dict[str, int], limits: Limits) -> Usage:
    """`rctl -u`'s counters as a `Usage` sample (see the module table)."""
    return Usage(cpu_ns=counters.get("cputime", 0) * 1_000_000_000, memory=counters.get("memoryuse", 0),
                 memory_limit=limits.memory, pids=counters.get("maxproc", 0), pids_limit=limits.pids,
                 block_read=0, block_write=0, net_rx=None, net_tx=None)


def parse_cputime(text: str) -> float:
    """ps's `time`: `mm:ss.cc`, or `hh:mm:ss.cc`, or a `d-` prefix before hours; seconds."""
    days, _, clock = text.rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + (int(days) * 86400 if days else 0)


def parse_processes(text: str, now: float) -> list[ProcessInfo]:
    """`ps -J` lines (columns `PS_COLUMNS`) -> processes; `now` (unix seconds) dates their start."""
    found = []
    for line in text.splitlines():
        words = line.split(None, len(PS_COLUMNS) - 1)
        if len(words) < len(PS_COLUMNS) - 1 or not words[0].isdigit():
            continue
        pid, ppid, uid, state, cputime, rss, elapsed = words[:7]
        args = words[7].split() if len(words) == len(PS_COLUMNS) else []
        found.append(ProcessInfo(pid=int(pid), ppid=int(ppid), uid=int(uid), host_uid=int(uid), state=state[:1],
                                 cpu_seconds=parse_cputime(cputime), rss=int(rss) * 1024,
                                 started=now - int(elapsed), args=args))
    return found
