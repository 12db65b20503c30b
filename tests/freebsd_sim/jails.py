"""Simulated `jail`, `jexec`, `jls` and `ps -J`: a jail is a record (name, jid, path, params);
its processes are the processes chrooted into its path (`ps -o keyword= -J` reads them from
/proc, procs.py).

- `jail -c` refuses a name in use, a numeric name, an unknown parameter, a missing path;
  without `persist` (and without a command, which kleened never gives) the jail dies at once,
  as a real one with no process does. `mount.devfs` mounts a devfs stand-in at `<path>/dev`;
  `vnet` gives the jail its own (down) lo0.
- `jail -r` SIGTERMs the jail's processes, waits `stop.timeout` (default 10 s), SIGKILLs the
  rest, gives vnet interfaces back to the host and forgets the jail. Like jail(8) without a
  jail.conf it runs no `exec.stop` and leaves devfs mounted (pseudo-parameters are not kept).
- `jexec` resolves the user (`-U` in the jail's /etc/passwd, `-u` on the host), chroots into the
  jail, drops privileges and execs the command: the command keeps jexec's pid, so its exit
  status and signals are real. `/sbin/ifconfig` and `/sbin/route` in a vnet jail go to the
  simulated network stack of that jail instead (a chroot has no network of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import time

from . import mounts, net, procs
from .state import Refused, State, Unsupported, out, processes_under

_KNOWN = {"name", "path", "persist", "vnet", "host.hostname", "ip4", "ip6", "ip4.addr", "ip6.addr", "mount.devfs",
          "devfs_ruleset", "enforce_statfs", "children.max", "osrelease", "osreldate", "securelevel", "stop.timeout",
          "sysvmsg", "sysvsem", "sysvshm", "exec.clean", "exec.jail_user", "exec.system_jail_user", "exec.stop"}
_NOT_SIMULATED = {"command", "exec.start", "exec.prestart", "exec.poststart", "exec.prestop", "exec.poststop",
                  "exec.created", "vnet.interface"}


def _load(state: State) -> dict:
    return state.load("jails", {"next_jid": 1, "jails": {}})


def _params(args: list[str]) -> dict[str, str]:
    out_: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        head, dot, tail = key.rpartition(".")
        if not sep and tail.startswith("no") and f"{head}{dot}{tail[2:]}" in _KNOWN:
            key, value = f"{head}{dot}{tail[2:]}", "false"
        elif not sep:
            value = "true"
        if key in _NOT_SIMULATED:
            raise Unsupported(f"jail parameter {key}")
        if key not in _KNOWN and not key.startswith("allow."):
            raise Refused(f"jail: unknown parameter: {key}")
        out_[key] = value
    return out_


def find(data: dict, ref: str) -> tuple[str, dict] | None:
    for name, info in data["jails"].items():
        if name == ref or str(info["jid"]) == ref:
            return name, info
    return None


def _create(state: State, data: dict, params: dict[str, str]) -> None:
    name, path = params.get("name", ""), params.get("path", "")
    if not name or not path:
        raise Refused("jail: name and path are required (simulated)")
    if name.isdigit():
        raise Refused(f"jail: {name}: name cannot be numeric")
    if find(data, name) is not None:
        raise Refused(f"jail: {name}: already exists")
    if not os.path.isdir(path):
        raise Refused(f"jail: path {path}: No such file or directory")
    if params.get("persist", "false") == "false":
        return  # no process and not persistent: a real jail is removed at once
    record = {"jid": data["next_jid"], "path": os.path.realpath(path),
              "vnet": params.get("vnet", "false") != "false",
              "ip4": [a for a in params.get("ip4.addr", "").split(",") if a],
              "ip6": [a for a in params.get("ip6.addr", "").split(",") if a],
              "params": {k: v for k, v in params.items() if not k.startswith(("exec.", "mount."))}}
    if params.get("mount.devfs", "false") != "false":
        mounts.mount_devfs(state, os.path.join(record["path"], "dev"))
    data["next_jid"] += 1
    data["jails"][name] = record
    if record["vnet"]:
        net.jail_created(state, name)


def _remove(state: State, data: dict, ref: str) -> None:
    found = find(data, ref)
    if found is None:
        raise Refused(f'jail: "{ref}" not found')
    name, info = found
    timeout = float(info["params"].get("stop.timeout", "10"))
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in processes_under(info["path"]):
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while processes_under(info["path"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not processes_under(info["path"]):
            break
    del data["jails"][name]
    net.jail_removed(state, name)


def jail(state: State, argv: list[str]) -> int:
    data = _load(state)
    if argv[:1] == ["-c"]:
        _create(state, data, _params(argv[1:]))
    elif argv[:1] == ["-r"] and len(argv) == 2:
        _remove(state, data, argv[1])
    elif argv[:1] == ["-m"]:
        params = _params(argv[1:])
        found = find(data, params.pop("name", ""))
        if found is None:
            raise Refused("jail: jail not found")
        if "vnet" in params:
            raise Refused("jail: vnet cannot be changed after creation")
        info = found[1]
        for family in ("ip4", "ip6"):
            if f"{family}.addr" in params:
                info[family] = [a for a in params.pop(f"{family}.addr").split(",") if a]
        info["params"].update(params)
    else:
        raise Unsupported(f"jail {' '.join(argv[:1])}")
    state.save("jails", data)
    return 0


def jls(state: State, argv: list[str]) -> int:
    data = _load(state)
    ref = argv[argv.index("-j") + 1] if "-j" in argv else None
    jails = data["jails"].items()
    if ref is not None:
        found = find(data, ref)
        if found is None:
            raise Refused(f'jls: jail "{ref}" not found')
        jails = [found]
    if any(a.startswith("--libxo") for a in argv):
        entries = [{"jid": i["jid"], "hostname": i["params"].get("host.hostname", ""), "path": i["path"],
                    "name": n, "state": "ACTIVE", "ipv4_addrs": i["ip4"], "ipv6_addrs": i["ip6"]} for n, i in jails]
        out(json.dumps({"__version": "2", "jail-information": {"jail": entries}}) + "\n")
    else:
        wanted = [a for a in argv if a not in ("-v", "-j", ref)] or ["jid", "name", "path"]
        for name, info in jails:
            values = {"jid": str(info["jid"]), "name": name, "path": info["path"]}
            out(" ".join(values.get(w, "-") for w in wanted) + "\n")
    return 0


_PS_KEYWORDS = {"pid": lambda p: str(p["pid"]), "ppid": lambda p: str(p["ppid"]), "uid": lambda p: str(p["uid"]),
               "state": lambda p: p["state"], "time": lambda p: procs.cputime(p["cpu"]),
               "rss": lambda p: str(p["rss"] // 1024), "etimes": lambda p: str(p["etimes"]),
               "args": lambda p: " ".join(p["args"])}


def ps(state: State, argv: list[str]) -> int:
    """`ps -o keyword= ... -J <jail>` (empty headers only): one line per process of the jail."""
    if "-J" not in argv:
        raise Unsupported("ps without -J")
    columns, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "-o" and rest:
            for word in rest.pop(0).split(","):
                keyword, sep, header = word.partition("=")
                if keyword not in _PS_KEYWORDS:
                    raise Refused(f"ps: {keyword}: keyword not found")
                if not sep or header:
                    raise Unsupported("ps -o with a header")
                columns.append(keyword)
        elif arg == "-J" and rest:
            ref = rest.pop(0)
        else:
            raise Unsupported(f"ps {arg}")
    found = find(_load(state), ref)
    if found is None:
        raise Refused(f"ps: Invalid jail id: {ref}")
    for pid in processes_under(found[1]["path"]):
        if (info := procs.read(pid)) is not None:
            out(" ".join(_PS_KEYWORDS[c](info) for c in columns or ["pid"]) + "\n")
    return 0


def _jail_user(root: str, name: str) -> tuple[int, int, str, str]:
    """(uid, gid, home, shell) from the jail's /etc/passwd (`jexec -U`)."""
    try:
        with open(os.path.join(root, "etc/passwd")) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 7 and fields[0] == name:
                    return int(fields[2]), int(fields[3]), fields[5], fields[6]
    except FileNotFoundError:
        pass
    raise Refused(f"jexec: getpwnam: {name}: no such user")


def _groups(root: str, name: str) -> list[int]:
    try:
        with open(os.path.join(root, "etc/group")) as f:
            return [int(g[2]) for g in (line.rstrip("\n").split(":") for line in f)
                    if len(g) >= 4 and name in g[3].split(",")]
    except FileNotFoundError:
        return []


def jexec(state: State, argv: list[str]) -> int:
    clean, user, jail_users, args = False, "root", False, list(argv)
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag == "-l":
            clean = True
        elif flag in ("-u", "-U"):
            user, jail_users = args.pop(0), flag == "-U"
        else:
            raise Unsupported(f"jexec {flag}")
    found = find(_load(state), args.pop(0)) if args else None
    if found is None:
        raise Refused("jexec: jail not found")
    name, info = found
    if args and args[0] in ("/sbin/ifconfig", "/sbin/route") and info["vnet"]:
        tool = net.ifconfig if args[0].endswith("ifconfig") else net.route
        return tool(state, args[1:], context=name)
    if jail_users:
        uid, gid, home, shell = _jail_user(info["path"], user)
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise Refused(f"jexec: getpwnam: {user}: no such user") from None
        uid, gid, home, shell = entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell
    env = dict(os.environ)
    if clean:
        env = {k: v for k, v in env.items() if k == "TERM"}
        env.update(HOME=home, SHELL=shell, USER=user, PATH="/bin:/usr/bin")
    command = args or [shell]
    groups = _groups(info["path"], user) if jail_users else []
    state.unlock()
    os.chroot(info["path"])
    os.chdir(home if clean and os.path.isdir(home) else "/")
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        raise Refused(f"jexec: execvp: {command[0]}: {exc.strerror}") from None
    return 1
