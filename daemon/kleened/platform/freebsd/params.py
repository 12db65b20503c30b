"""Jail parameters (`jail_param`, klee's `-J`): validation, upstream's defaults, and the parts
kleened acts on itself instead of handing them to jail(8).

Vocabulary: a *param* is one `key[=value]` string as the user gave it; its *key* is the part
before `=`. Values are passed to jail(8) as one argv element each, never through a shell.

Upstream's defaults (freebsd-backend.md §1.3 step 5), each added only when no user param *starts
with* one of its keys, in upstream's order:

    mount.devfs=true  exec.stop=/bin/sh /etc/rc.shutdown  exec.clean=true  exec.jail_user=<user>
    host.hostname=<id>

What kleened does differently, and why:
- `exec.stop` is never given to jail(8). Pseudo-parameters are not stored in the kernel, so a
  later `jail -r <name>` never sees it and rc.shutdown never ran upstream (B1); kleened runs it
  itself through jexec, as an argv (the default without upstream's embedded quotes), between the
  stop signal and `jail -r` (`stop_command`).
- `exec.clean`/`exec.noclean` choose `jexec -l` (a login environment) for every process, and
  `exec.jail_user`/`exec.system_jail_user` choose the user (`jexec -U`, or `-u` for a host
  user) for every process, main or exec: one user resolution for both paths (B25).
- `name`, `path`, `persist`, `nopersist`, `jid` and `command` are kleened's: the jail is created
  persistent and processes are started with jexec (B2), so a user value would break that;
  they are refused with a clear message instead of silently overridden.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
RESERVED = ("name", "path", "persist", "nopersist", "jid", "command")
DEFAULT_STOP = ["/bin/sh", "/etc/rc.shutdown"]
# Characters that make jail(8) run a command string with `/bin/sh -c` instead of splitting it.
_SHELL_CHARS = set("!\"$&'()*;<>?[\\]`{|}~")

# (default param, the prefixes that suppress it), in upstream's order.
DEFAULTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mount.devfs=true", ("mount.devfs", "mount.nodevfs")),
    ("exec.stop", ("exec.stop", "exec.nostop")),
    ("exec.clean=true", ("exec.clean", "exec.noclean")),
    ("exec.jail_user", ("exec.jail_user",)),
    ("host.hostname", ("host.hostname",)),
)
# Handled by kleened, never on the jail(8) line (see the module docstring).
_OURS = ("exec.stop", "exec.nostop")


class ParamError(ValueError):
    """A jail parameter kleened refuses; `str()` is the one line the client sees."""


def key_of(param: str) -> str:
    return param.split("=", 1)[0]


def check(params: Sequence[str]) -> list[str]:
    """Validate user params; return them unchanged. Raises `ParamError`."""
    for param in params:
        key = key_of(param)
        if not _KEY.fullmatch(key):
            raise ParamError(f"invalid jail parameter '{param}': the name must be like 'allow.raw_sockets'")
        if key in RESERVED:
            raise ParamError(f"jail parameter '{key}' is set by kleened and cannot be given")
        if "\0" in param or "\n" in param:
            raise ParamError(f"invalid jail parameter '{key}': no NUL or newline allowed")
    return list(params)


def _has(params: Sequence[str], prefixes: Sequence[str]) -> bool:
    return any(p.startswith(prefix) for p in params for prefix in prefixes)


def with_defaults(params: Sequence[str], *, container_id: str, user: str) -> list[str]:
    """Upstream's default params prepended to the user's, as upstream builds them (with
    `exec.stop` in its place, without upstream's quotes); see `jail_line` for what jail(8) gets."""
    values = {"exec.stop": "exec.stop=" + " ".join(DEFAULT_STOP), "exec.jail_user": f"exec.jail_user={user}",
              "host.hostname": f"host.hostname={container_id}"}
    added = [values.get(default, default) for default, prefixes in DEFAULTS if not _has(params, prefixes)]
    return added + list(params)


def jail_line(params: Sequence[str]) -> list[str]:
    """The params for `jail -c`: everything but what kleened runs itself (`exec.stop`)."""
    return [p for p in params if key_of(p) not in _OURS]


def value(params: Sequence[str], key: str) -> str | None:
    """The value of the *last* `key=value` (jail(8): a later value wins); `key` alone is "true",
    `no<key>` is "false" (jail(8)'s boolean forms), None when absent."""
    found: str | None = None
    head, _, tail = key.rpartition(".")
    negated = f"{head}.no{tail}" if head else f"no{tail}"
    for param in params:
        name, sep, rest = param.partition("=")
        if name == key:
            found = rest if sep else "true"
        elif name == negated and not sep:
            found = "false"
    return found


def is_true(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    return text.lower() not in ("false", "0", "no", "")


@dataclass(frozen=True)
class ProcessUser:
    """Who a jail's processes run as, and how jexec learns it (B25: one answer for every path)."""

    name: str
    from_host: bool  # exec.system_jail_user: look the user up in the host's passwd (`jexec -u`)
    clean: bool  # exec.clean: `jexec -l`, a login environment from the user's login class


def process_user(params: Sequence[str], container_user: str, exec_user: str = "") -> ProcessUser:
    """An exec's own user wins, then `-J exec.jail_user=`, then the container's user (as upstream)."""
    jail_user = value(params, "exec.jail_user")
    name = exec_user or jail_user or container_user or "root"
    return ProcessUser(name=name, from_host=is_true(value(params, "exec.system_jail_user"), False),
                       clean=is_true(value(params, "exec.clean"), True))


def stop_command(params: Sequence[str]) -> list[str] | None:
    """What `exec.stop` asks to run inside the jail before `jail -r`, as an argv (None: nothing).

    jail(8)'s rule for command strings is kept: a string with a shell metacharacter runs with
    `/bin/sh -c` (the jail's own shell, not the host's), any other string is split on whitespace.
    """
    text = value(params, "exec.stop")
    if text is None:
        return list(DEFAULT_STOP)
    if text == "false" or not text.strip():
        return None
    if any(ch in _SHELL_CHARS for ch in text):
        return ["/bin/sh", "-c", text]
    return text.split()


def devfs(params: Sequence[str]) -> bool:
    """Whether jail(8) mounts devfs in the jail (default true, upstream's default)."""
    return is_true(value(params, "mount.devfs"), True)
