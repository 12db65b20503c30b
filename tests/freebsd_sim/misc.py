"""Simulated `sysctl`, `rctl` and `freebsd-update`.

- sysctl: a table of the OIDs kleened reads or sets; boot-time tunables (`kern.racct.enable`)
  and the system's identity are read-only, an unknown OID is refused, and so are the
  `net.link.bridge.*` OIDs until a bridge was created (if_bridge is loaded by then).
- rctl: rules are kept and listed, nothing is enforced; refused when racct is disabled (the
  fixture chooses) or when a rule does not parse. `-u jail:<name>` prints every resource in
  rctl's order, the jail's processes' CPU, memory and count read from /proc (procs.py), and is
  refused for a jail that does not exist.
- freebsd-update: checks its options (base and work directories must exist) and records each
  run; it downloads nothing ("No updates needed", then "No updates are available to install."
  with freebsd-update's non-zero exit).
"""

from __future__ import annotations

import os
import re

from . import jails, procs
from .state import Refused, State, Unsupported, out, processes_under

SYSCTL_DEFAULTS = {
    "net.inet.ip.forwarding": "0", "net.inet6.ip6.forwarding": "0", "net.link.bridge.pfil_bridge": "0",
    "net.link.bridge.pfil_member": "1", "kern.racct.enable": "1", "kern.osrelease": "14.1-RELEASE-p5",
    "hw.machine": "amd64", "hw.machine_arch": "amd64", "security.jail.jailed": "0",
}
READ_ONLY = {"kern.racct.enable", "kern.osrelease", "hw.machine", "hw.machine_arch", "security.jail.jailed"}
_USAGE_ORDER = ("cputime", "datasize", "stacksize", "coredumpsize", "memoryuse", "memorylocked", "maxproc",
                "openfiles", "vmemoryuse", "pseudoterminals", "swapuse", "nthr", "msgqqueued", "msgqsize", "nmsgq",
                "nsem", "nsemop", "nshm", "shmsize", "wallclock", "pcpu", "readbps", "writebps", "readiops",
                "writeiops")
_RESOURCES = frozenset(_USAGE_ORDER)
_RULE = re.compile(r"^(jail|user|loginclass|process):([^:]+):([a-z]+):(deny|log|devctl|throttle|sig\w+)="
                   r"(\d+[kmgtKMGT]?)(/(jail|process|user|loginclass))?$")


def sysctl(state: State, argv: list[str]) -> int:
    values = state.load("sysctl", dict(SYSCTL_DEFAULTS))
    quiet = "-n" in argv
    loaded = state.load("kld", [])
    for arg in (a for a in argv if a != "-n"):
        key, sep, value = arg.partition("=")
        if key not in values or (key.startswith("net.link.bridge.") and "if_bridge" not in loaded):
            raise Refused(f"sysctl: unknown oid '{key}'")
        if not sep:
            out(values[key] + "\n" if quiet else f"{key}: {values[key]}\n")
            continue
        if key in READ_ONLY:
            raise Refused(f"sysctl: oid '{key}' is a read only tunable\nsysctl: Tunable values are set in "
                          "/boot/loader.conf")
        out(f"{key}: {values[key]} -> {value}\n")
        values[key] = value
    state.save("sysctl", values)
    return 0


def rctl(state: State, argv: list[str]) -> int:
    rules: list[str] = state.load("rctl", [])
    if not argv:
        out("".join(r + "\n" for r in rules))
        return 0
    if state.load("sysctl", dict(SYSCTL_DEFAULTS))["kern.racct.enable"] != "1":
        raise Refused("rctl: rctl_add_rule: RACCT/RCTL present, but disabled; enable using kern.racct.enable=1 tunable")
    if argv[0] == "-a" and len(argv) == 2:
        match = _RULE.match(argv[1])
        if match is None or match.group(3) not in _RESOURCES:
            raise Refused(f"rctl: rctl_add_rule: {argv[1]}: Invalid argument")
        rules.append(argv[1])
    elif argv[0] == "-r" and len(argv) == 2:
        prefix = argv[1].rstrip(":") + ":"
        rules = [r for r in rules if not r.startswith(prefix)]
    elif argv[0] == "-u" and len(argv) == 2:
        out(_usage(state, argv[1]))
    else:
        raise Unsupported(f"rctl {' '.join(argv)}")
    state.save("rctl", rules)
    return 0


def _usage(state: State, subject: str) -> str:
    """`rctl -u jail:<name>`: every resource in rctl's order, those of the jail's processes
    (cputime, memoryuse, maxproc, nthr, wallclock) from /proc, the others 0."""
    kind, _, name = subject.partition(":")
    found = jails.find(jails._load(state), name) if kind == "jail" else None
    if found is None:
        raise Refused(f"rctl: failed to show resource consumption for '{subject}': No such process")
    infos = [i for pid in processes_under(found[1]["path"]) if (i := procs.read(pid)) is not None]
    values = dict.fromkeys(_USAGE_ORDER, 0)
    values.update(cputime=int(sum(i["cpu"] for i in infos)), memoryuse=sum(i["rss"] for i in infos),
                  maxproc=len(infos), nthr=len(infos), wallclock=max((i["etimes"] for i in infos), default=0))
    return "".join(f"{key}={value}\n" for key, value in values.items())


def freebsd_update(state: State, argv: list[str]) -> int:
    args, options = list(argv), {}
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("-b", "-d", "--currently-running", "-f", "-r"):
            options[flag] = args.pop(0)
        elif flag not in ("--not-running-from-cron",):
            raise Unsupported(f"freebsd-update {flag}")
    for flag in ("-b", "-d"):
        if flag in options and not os.path.isdir(options[flag]):
            raise Refused(f"freebsd-update: Directory does not exist or is not writable: {options[flag]}")
    if args not in (["fetch"], ["install"]):
        raise Unsupported(f"freebsd-update {' '.join(args)}")
    runs = state.load("freebsd-update", [])
    runs.append(argv)
    state.save("freebsd-update", runs)
    release = options.get("--currently-running", state.load("sysctl", SYSCTL_DEFAULTS)["kern.osrelease"])
    if args == ["fetch"]:
        out(f"Looking up update.FreeBSD.org mirrors... (simulated)\nNo updates needed to update system to {release}.\n")
        return 0
    out("No updates are available to install.\nRun 'freebsd-update fetch' first.\n")
    return 1
