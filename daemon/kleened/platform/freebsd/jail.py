"""Command lines for jails, as data: create, run a process, stop, modify, list.

The lifecycle kleened uses (freebsd-backend.md §1.6 "Suggested design"), and the upstream bugs
each step avoids:

1. `jail -c path=<root> name=<id> persist <network params> <params>`: the jail exists with no
   process in it, so networking can be plugged in before anything runs (a vnet jail must exist
   before `ifconfig epairNb vnet <id>`), as root, whatever the image's user (B3);
2. each process, the main one included, is `jexec [-l] -U <user> <id> /usr/bin/env K=V...
   <argv>` started as kleened's own child: jexec and env exec, so the pid kleened holds
   is the command and its exit status is the command's (B2: `jail -c ... command=` reports 0 or
   1 only), and signals reach it directly;
3. stop: the configured signal to the main process, then `exec.stop` run with jexec (B1), then
   `jail -r <id>` (SIGTERM to the rest, `stop.timeout`, then the kernel kills and removes);
4. live changes: `jail -m name=<id> <params>`; ipnet address lists with `ip4.addr`/`ip6.addr`,
   each in its own family (B7).

The jail's name is the container id (12 hex, never all digits, so never taken for a jid); native
`jexec <id>` and `jls` keep working as upstream documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .params import ProcessUser

ENV = "/usr/bin/env"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_ENV_ENTRY = re.compile(r"^[^=\s-][^=\s]*=", re.DOTALL)
ROOT = ProcessUser(name="root", from_host=True, clean=False)  # kleened's own commands in a jail


def check_name(name: str) -> str:
    """A jail name kleened may use: not all digits (jexec/jls would read a jid), no dots at the
    start (jail(8) reads `a.b` as a child jail), short."""
    if not _NAME.fullmatch(name) or name.isdigit():
        raise ValueError(f"invalid jail name '{name}'")
    return name


@dataclass(frozen=True)
class Network:
    """How the jail meets the network: upstream's four drivers. Addresses only for ipnet."""

    driver: str  # "host", "disabled", "ipnet", "vnet"
    ip4: tuple[str, ...] = ()
    ip6: tuple[str, ...] = ()


def network_params(net: Network) -> list[str]:
    """The jail(8) params for a driver (freebsd-backend.md §1.3 table), with what changed:

    - ipnet: `ip4=new ip6=new` always, so a network connected later can add its addresses with
      `jail -m` in either family (upstream put v6 addresses into `ip4.addr`, B7); the aliases
      on the host interface are kleened's own commands, not `exec.prestart` strings;
    - vnet: only `vnet`; epairs are moved in and configured after creation (`FreeBSDNetworkDriver.plug`), as
      root, with one default route per family (B3, B4).
    """
    if net.driver == "host":
        return ["ip4=inherit", "ip6=inherit"]
    if net.driver == "disabled":
        return ["ip4=disable", "ip6=disable"]
    if net.driver == "vnet":
        return ["vnet"]
    if net.driver == "ipnet":
        out = ["ip4=new", "ip6=new"]
        out += [f"ip4.addr={','.join(net.ip4)}"] if net.ip4 else []
        out += [f"ip6.addr={','.join(net.ip6)}"] if net.ip6 else []
        return out
    raise ValueError(f"unknown network driver '{net.driver}'")


def create_argv(name: str, path: Path | str, network: Sequence[str], params: Sequence[str]) -> list[str]:
    """`jail -c`, persistent and with no command (see the module docstring)."""
    return ["jail", "-c", f"path={path}", f"name={check_name(name)}", "persist", *network, *params]


@dataclass(frozen=True)
class Command:
    """One process to run in a jail. `env` is added on top of jexec's (clean or not) environment."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = ""  # "": jexec's choice, the user's home with -l, else the jail's root
    tty: bool = False


# Changes directory inside the jail, then execs the command: the jail's own /bin/sh, with the
# directory and the command as positional parameters (data, never parsed as shell code). jexec's
# `-d` would do it, but only the newest jexec has it.
CHDIR_SCRIPT = 'cd -- "$1" || exit 125; shift; exec "$@"'


def exec_argv(name: str, command: Command, user: ProcessUser) -> list[str]:
    """`jexec [-l] -U|-u <user> <name> /usr/bin/env K=V... [<chdir>] <args>`.

    env's own rule, that leading `K=V` words are assignments, is why `args[0]` must not contain
    `=` and every env entry must. A `cwd` adds `/bin/sh -c CHDIR_SCRIPT kleened-cwd <cwd>`
    before the command; the pid stays the command's (the shell execs it).
    """
    if not command.args:
        raise ValueError("no command to run")
    if "=" in command.args[0]:
        raise ValueError(f"the command '{command.args[0]}' contains '=': env(1) would take it for a variable")
    for entry in command.env:
        if not _ENV_ENTRY.match(entry) or "\0" in entry:
            raise ValueError(f"invalid environment entry '{entry}'")
    argv = ["jexec", *(["-l"] if user.clean else []), "-u" if user.from_host else "-U", user.name,
            check_name(name), ENV, *command.env]
    if command.cwd:
        argv += ["/bin/sh", "-c", CHDIR_SCRIPT, "kleened-cwd", command.cwd]
    return argv + list(command.args)


def root_argv(name: str, *args: str) -> list[str]:
    """A command kleened runs in the jail for itself (ifconfig, route): as the host's root, so it
    works whatever the image's passwd holds; no login environment, no env wrapper."""
    return ["jexec", "-u", ROOT.name, check_name(name), *args]


def remove_argv(name: str) -> list[str]:
    return ["jail", "-r", check_name(name)]


def modify_argv(name: str, params: Sequence[str]) -> list[str]:
    return ["jail", "-m", f"name={check_name(name)}", *params]


def addresses_params(ip4: Sequence[str], ip6: Sequence[str]) -> list[str]:
    """The whole address lists of an ipnet jail, each family in its own param (B7)."""
    return [f"ip4.addr={','.join(ip4)}", f"ip6.addr={','.join(ip6)}"]


def exists_argv(name: str) -> list[str]:
    """Exits 0 when the jail exists, 1 when not (upstream's running check)."""
    return ["jls", "-j", check_name(name), "jid"]


LIST_ARGV = ["jls", "--libxo=json", "-v"]


def processes_argv(name: str) -> list[str]:
    """One pid per line of the processes in the jail (jail(8)'s `ps -J`)."""
    return ["ps", "-o", "pid=", "-J", check_name(name)]


@dataclass(frozen=True)
class JailInfo:
    jid: int
    name: str
    path: str
    ip4: tuple[str, ...] = ()
    ip6: tuple[str, ...] = ()


def parse_jls(text: str) -> dict[str, JailInfo]:
    """`jls --libxo=json -v` -> name -> info (upstream reads `jail-information.jail[]`)."""
    data = json.loads(text) if text.strip() else {}
    out = {}
    for entry in data.get("jail-information", {}).get("jail", []):
        info = JailInfo(jid=int(entry["jid"]), name=str(entry.get("name") or entry["jid"]),
                        path=str(entry.get("path", "")), ip4=tuple(entry.get("ipv4_addrs") or ()),
                        ip6=tuple(entry.get("ipv6_addrs") or ()))
        out[info.name] = info
    return out


def parse_pids(text: str) -> list[int]:
    return [int(word) for word in text.split() if word.isdigit()]
