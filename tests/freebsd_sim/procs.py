"""What the simulated `ps -J` and `rctl -u` report of a jail's processes (the processes chrooted
into its path), read from this Linux host's /proc: the numbers are real, the formats FreeBSD's."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def read(pid: int) -> dict | None:
    """pid, ppid, uid, state, cpu (seconds), rss (bytes), etimes (seconds), args; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command's name, which may hold spaces
    return {"pid": pid, "ppid": int(fields[1]), "uid": uid, "state": fields[0],
            "cpu": (int(fields[11]) + int(fields[12])) / _TICKS, "rss": int(fields[21]) * _PAGE,
            "etimes": max(0, int(uptime - int(fields[19]) / _TICKS)), "args": args}


def cputime(seconds: float) -> str:
    """FreeBSD ps's `time` column: minutes:seconds.hundredths."""
    hundredths = round(seconds * 100)
    return f"{hundredths // 6000}:{hundredths // 100 % 60:02d}.{hundredths % 100:02d}"
