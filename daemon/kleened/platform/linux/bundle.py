"""OCI bundle data for runc: `config.json` and exec `process.json` as dicts, and jail parameters.

Everything here is pure (no host access), so it is tested without root; `runc.py` writes it out.

Jail parameters on Linux (`check_params`): upstream passes `-J key[=value]` to `jail -c`. We
accept the ones that mean something here, normalise them (`noX` -> `X=false`, bare `X` ->
`X=true`) and refuse the rest with "unsupported jail parameter '<key>' on Linux".

- `host.hostname=NAME`: the container's hostname (UTS namespace); default `ContainerSpec.hostname`.
- `exec.jail_user=USER`: not used by the runtime; core resolves the container's user, and this
  wins over `--user` as upstream.
- `exec.system_jail_user[=BOOL]`, `exec.system_user=USER`: accepted, no effect (they choose host
  accounts for jail(8) hooks, which do not exist here).
- `exec.clean[=BOOL]`, `exec.noclean`: accepted, no effect; the environment is always exactly
  the env given, never the daemon's.
- `mount.devfs[=BOOL]`, `mount.nodevfs`: true (default): `/dev` is a tmpfs with the standard
  devices (null, zero, full, random, urandom, tty, ptmx, pts). false: `/dev` is a directory of
  the bundle holding only `null` (runc needs it) and the `ptmx` link terminals need. The device
  cgroup allows the standard set either way (runc always adds it).
- `allow.raw_sockets[=BOOL]`, `allow.noraw_sockets`: true keeps CAP_NET_RAW (ping, raw
  sockets). The default is false, as in jail(8): the capability is dropped.
- `allow.sysvipc[=true]`: accepted, no effect; SysV IPC always works inside the container's
  private IPC namespace. false is refused (Linux cannot switch it off per container).
- `enforce_statfs=0|1|2`: accepted, no effect; the mount namespace only ever shows the
  container's own mounts.
- `linux.memory=BYTES`: memory limit, also used as the memory+swap limit (no swap); suffixes
  k, m, g, t are powers of 1024.
- `linux.pids=N`: maximum number of tasks (pids cgroup).
- `linux.cpus=FLOAT`: CPU quota in CPUs (cfs quota over a 100 ms period).
- `linux.seccomp=default|unconfined`: the container's seccomp profile (upstream klee has no
  other way to say it).
The `linux.*` limits are resource limits like the `resources` field of a container; core
merges both (`core/isolation.py`), the field winning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kleened.platform.base import ContainerSpec, Limits, NetworkMode, ProcessSpec, TmpfsMount

INIT_DESTINATION = "/.init"
NODEV_DIR = "dev"  # under the bundle: /dev's source when mount.devfs=false

# Docker's default set. CAP_NET_RAW is added only with allow.raw_sockets.
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

# As `runc spec` generates them.
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# (major, minor or None for all); runc adds the same set itself, listing them documents intent.
_CHAR_DEVICES = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, None)]



# --- jail parameters ----------------------------------------------------------------------------

_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,62})")
_SIZE = re.compile(r"([0-9]+)([kmgt]?)", re.IGNORECASE)
_BOOLS = {"true": "true", "1": "true", "false": "false", "0": "false"}


def _bool(key: str, value: str | None) -> str:
    if value is None:
        return "true"
    try:
        return _BOOLS[value.lower()]
    except KeyError:
        raise ValueError(f"jail parameter '{key}' expects true or false, got '{value}'") from None


def _required(key: str, value: str | None) -> str:
    if not value:
        raise ValueError(f"jail parameter '{key}' needs a value")
    return value


def _hostname(key: str, value: str | None) -> str:
    value = _required(key, value)
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"invalid hostname '{value}' in jail parameter '{key}'")
    return value


def _sysvipc(key: str, value: str | None) -> str:
    if _bool(key, value) == "false":
        raise ValueError("jail parameter 'allow.sysvipc' cannot be disabled on Linux")
    return "true"


def _statfs(key: str, value: str | None) -> str:
    if value not in ("0", "1", "2"):
        raise ValueError(f"jail parameter '{key}' expects 0, 1 or 2")
    return value


def _memory(key: str, value: str | None) -> str:
    m = _SIZE.fullmatch(_required(key, value))
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"jail parameter '{key}' expects a positive size in bytes (suffix k, m, g or t)")
    return str(int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2).lower() or "_"))


def _pids(key: str, value: str | None) -> str:
    if not _required(key, value).isdigit() or int(value) <= 0:
        raise ValueError(f"jail parameter '{key}' expects a positive integer")
    return str(int(value))


def _cpus(key: str, value: str | None) -> str:
    try:
        cpus = float(_required(key, value))
    except ValueError:
        cpus = math.nan
    if not math.isfinite(cpus) or cpus < 0.01:
        raise ValueError(f"jail parameter '{key}' expects a number of CPUs of at least 0.01")
    return repr(cpus)


def _seccomp(key: str, value: str | None) -> str:
    if value not in ("default", "unconfined"):
        raise ValueError(f"jail parameter '{key}' expects 'default' or 'unconfined'")
    return value


_PARAMS: dict[str, Callable[[str, str | None], str]] = {
    "host.hostname": _hostname,
    "exec.jail_user": _required,
    "exec.system_jail_user": _bool,
    "exec.system_user": _required,
    "exec.clean": _bool,
    "mount.devfs": _bool,
    "allow.raw_sockets": _bool,
    "allow.sysvipc": _sysvipc,
    "enforce_statfs": _statfs,
    "linux.memory": _memory,
    "linux.pids": _pids,
    "linux.cpus": _cpus,
    "linux.seccomp": _seccomp,
}
_NEGATABLE = {"exec.clean", "mount.devfs", "allow.raw_sockets", "allow.sysvipc", "exec.system_jail_user"}


def _negated(key: str) -> str | None:
    """`mount.nodevfs` -> `mount.devfs`: jail(8) spells false booleans with a `no` prefix."""
    head, dot, tail = key.rpartition(".")
    if tail.startswith("no"):
        plain = f"{head}{dot}{tail[2:]}"
        if plain in _NEGATABLE:
            return plain
    return None


def check_params(params: Sequence[str]) -> dict[str, str]:
    """Validate and normalise `key[=value]` jail parameters; later ones win. See the module table."""
    result: dict[str, str] = {}
    for raw in params:
        key, sep, value = raw.partition("=")
        key = key.strip()
        given = value if sep else None
        plain = _negated(key)
        if plain is not None and given is None:
            result[plain] = "false"
        elif key in _PARAMS:
            result[key] = _PARAMS[key](key, given)
        else:
            raise ValueError(f"unsupported jail parameter '{key}' on Linux")
    return result


# --- config.json --------------------------------------------------------------------------------


def devfs_enabled(params: dict[str, str]) -> bool:
    return params.get("mount.devfs", "true") == "true"


def capabilities(params: dict[str, str]) -> list[str]:
    caps = list(CAPABILITIES)
    if params.get("allow.raw_sockets") == "true":
        caps.append("CAP_NET_RAW")
    return caps


def rlimits(limits: Limits) -> list[dict[str, Any]]:
    """`process.rlimits` for the ulimits in `limits`; the rest stay as the daemon's."""
    found = [("RLIMIT_NOFILE", limits.nofile), ("RLIMIT_NPROC", limits.nproc)]
    return [{"type": kind, "soft": pair[0], "hard": pair[1]} for kind, pair in found if pair is not None]


def build_process(process: ProcessSpec, bounding: list[str], *, init: bool,
                  limits: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OCI `process` object. `init` prefixes tini, which forwards signals and reaps zombies.

    A non-root user gets empty effective/permitted sets (as a setuid(2) from root would leave
    it) but keeps the bounding set, so setuid binaries still work up to that limit. `limits`:
    `rlimits(...)`, which execs repeat (runc gives an exec no rlimits of its own).
    """
    caps = bounding if process.uid == 0 else []
    extra = {"rlimits": list(limits)} if limits else {}
    return {**extra,
        "terminal": process.tty,
        "user": {"uid": process.uid, "gid": process.gid, "additionalGids": list(process.additional_gids)},
        "args": [INIT_DESTINATION, "--", *process.args] if init else list(process.args),
        "env": list(process.env),
        "cwd": process.cwd or "/",
        "capabilities": {"bounding": list(bounding), "effective": list(caps), "permitted": list(caps)},
        "noNewPrivileges": True,
    }


def _standard_mounts(devfs: bool, bundle_dir: Path) -> list[dict[str, Any]]:
    if devfs:
        dev = {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}  # fmt: skip
    else:
        # runc creates no device nodes when /dev is a bind mount; it only needs /dev/null.
        dev = {"destination": "/dev", "type": "bind", "source": str(bundle_dir / NODEV_DIR),
               "options": ["rbind", "nosuid", "noexec"]}  # fmt: skip
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        dev,
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip


def _namespaces(spec: ContainerSpec) -> list[dict[str, str]]:
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network is NetworkMode.NONE:
        namespaces.append({"type": "network"})  # runc makes a fresh one with lo up
    elif spec.network is NetworkMode.NAMESPACE:
        if not spec.netns_path:
            raise ValueError("network mode 'namespace' needs a netns path")
        namespaces.append({"type": "network", "path": spec.netns_path})
    return namespaces


def limit_resources(limits: Limits, *, lift: bool = False) -> dict[str, Any]:
    """`linux.resources` entries (memory, cpu, pids) for `limits`, as `config.json` and
    `runc update -r` take them; the same data works on cgroup v1 and v2 (runc converts).

    `lift`: unset limits become "unlimited" (-1, and the default share), so that an update
    removes a limit that was there; without it they are left out.
    """
    unset = -1 if lift else None
    memory = {"limit": _pick(limits.memory, unset), "swap": _pick(limits.memory_swap, unset)}
    cpu = {"quota": _pick(limits.cpu_quota, unset), "period": limits.cpu_period,
           "shares": _pick(limits.cpu_shares, 1024 if lift else None)}  # fmt: skip
    pids = {"limit": _pick(limits.pids, unset)}
    found = {"memory": memory, "cpu": cpu, "pids": pids}
    return {key: {k: v for k, v in entry.items() if v is not None} for key, entry in found.items()
            if any(v is not None for v in entry.values())}  # fmt: skip


def _pick(value: int | None, unset: int | None) -> int | None:
    return unset if value is None else value


def _resources(limits: Limits) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for major, minor in _CHAR_DEVICES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        devices.append(rule)
    return {"devices": devices, **limit_resources(limits)}


def _user_namespace(spec: ContainerSpec, linux: dict[str, Any], mounts: list[dict[str, Any]]) -> None:
    """Run the container in a user namespace of `spec.userns`.

    sysfs can only be mounted by the owner of the network namespace: with the host's stack or a
    namespace the daemon made (vnet/ipnet), /sys is the host's, bound read-only, and the cgroup
    hierarchies mounted under it are hidden.
    """
    userns = spec.userns
    if userns is None:
        return
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": userns.uid_base, "size": userns.size}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": userns.gid_base, "size": userns.size}]
    if spec.network is not NetworkMode.NONE:
        for i, m in enumerate(mounts):
            if m["destination"] == "/sys":
                mounts[i] = {"destination": "/sys", "type": "bind", "source": "/sys",
                             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}  # fmt: skip
        linux["maskedPaths"].append("/sys/fs/cgroup")


def build_config(spec: ContainerSpec, *, bundle_dir: Path, init_path: str, cgroups_path: str,
                 seccomp: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole `config.json` for `spec`; `spec.params` must come from `check_params`.

    `spec.rootfs` must be the real path: runc rejects a rootfs that is a symlink. `seccomp` is
    the rendered profile (`seccomp.render`), None for none; runc applies it to execs too.
    """
    params = spec.params
    mounts = _standard_mounts(devfs_enabled(params), bundle_dir)
    mounts.append({"destination": INIT_DESTINATION, "type": "bind", "source": init_path, "options": ["bind", "ro"]})
    for m in spec.mounts:
        if isinstance(m, TmpfsMount):
            size = [f"size={m.size}"] if m.size else []
            mounts.append({"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=1777", *size]})  # fmt: skip
            continue
        mounts.append({"destination": m.destination, "type": "bind", "source": str(m.source),
                       "options": ["rbind", "ro" if m.read_only else "rw"]})  # fmt: skip
    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "namespaces": _namespaces(spec),
        "resources": _resources(spec.limits),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if seccomp is not None:
        linux["seccomp"] = seccomp
    _user_namespace(spec, linux, mounts)
    return {
        "ociVersion": "1.0.2",
        "process": build_process(spec.process, capabilities(params), init=True, limits=rlimits(spec.limits)),
        "root": {"path": str(spec.rootfs), "readonly": False},
        "hostname": params.get("host.hostname") or spec.hostname,
        "mounts": mounts,
        "linux": linux,
    }
