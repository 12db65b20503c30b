"""kleened's configuration on FreeBSD: a default for every config key, and the values the
FreeBSD drivers read.

`FREEBSD_DEFAULTS` names every key of `kleened.config.Config` (a unit test keeps it complete).
Where upstream had a value (its sample `config.yaml`) it is upstream's; kleened's own keys keep
their Linux defaults unless FreeBSD's layout says otherwise (`state_root` under /var/db, as
hier(7) puts daemons' state). Upstream had no defaults at all: every key was required.

Keys only the FreeBSD drivers read: `pf_mode` ("file", upstream's whole-file /etc/pf.conf, or
"anchor", rules loaded into the anchor `pf_anchor` only) and `pf_anchor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kleened.config import DEFAULT_SOCKET, Config

FREEBSD_DEFAULTS: dict[str, Any] = {
    "api_listening_sockets": [{"address": DEFAULT_SOCKET}],
    "log_level": "info",
    "state_root": "/var/db/kleened",
    "host_prefix": "kleene",
    "max_request_body": 4 * 1024 * 1024,
    "max_ws_message": 1024 * 1024,
    "stop_timeout": 3.0,  # seconds before the stop signal gives way to exec.stop and `jail -r`
    "log_max_size": 10 * 1024 * 1024,
    "log_max_files": 5,
    "log_buffer": 4 * 1024 * 1024,
    "log_recent": 64 * 1024,
    "attach_buffer": 4 * 1024 * 1024,
    "detach_keys": "ctrl-p,ctrl-q",
    "events_history": 1000,
    "events_buffer": 1024,
    "cp_max_bytes": 16 * 1024**3,  # cp into a jail: the same caps as on Linux
    "cp_max_entries": 1_000_000,
    # Isolation: seccomp and user namespaces are Linux's; a jail is confined by its own parameters
    # (`allow.*`, `enforce_statfs`, `securelevel`). No default pids limit: it is an rctl rule, and
    # rctl is off unless kern.racct.enable=1 was set at boot (a default would refuse every container).
    "seccomp_profile": "unconfined",
    "default_pids_limit": 0,
    "userns_remap": "",
    # Registries (docs/images.md): the same as on Linux; credentials beside the config file.
    "default_registry": "docker.io",
    "insecure_registries": [],
    "registry_ca_file": None,
    "registry_auth_file": "/usr/local/etc/kleened/registry-auth.json",
    "registry_concurrency": 3,
    "registry_retries": 3,
    "kleene_root": "zroot/kleene",
    "pf_config_template_path": "/usr/local/etc/kleened/pf.conf.kleene",
    "pf_config_path": "/etc/pf.conf",
    "enable_logging": True,  # upstream's sample; the rc.d script sends the log to /var/log/kleened.log
    "backend": "auto",
    "pf_mode": "file",
    "pf_anchor": "kleened",
}
PF_MODES = ("file", "anchor")


@dataclass(frozen=True)
class FreeBSDSettings:
    """What the FreeBSD drivers need from the configuration, upstream keys filled in."""

    kleene_root: str
    pf_config_template_path: str
    pf_config_path: str
    host_prefix: str
    stop_timeout: float
    pf_mode: str = "file"
    pf_anchor: str = "kleened"

    def __post_init__(self) -> None:
        if self.pf_mode not in PF_MODES:
            raise ValueError(f"pf_mode must be one of {', '.join(PF_MODES)}, not '{self.pf_mode}'")


def from_config(config: Config) -> FreeBSDSettings:
    """Upstream's keys are optional in kleened's config; a missing one takes its FreeBSD default."""

    def pick(key: str) -> Any:
        value = getattr(config, key)
        return FREEBSD_DEFAULTS[key] if value is None else value

    return FreeBSDSettings(kleene_root=pick("kleene_root"), pf_config_template_path=pick("pf_config_template_path"),
                           pf_config_path=pick("pf_config_path"), host_prefix=config.host_prefix,
                           stop_timeout=config.stop_timeout, pf_mode=config.pf_mode, pf_anchor=config.pf_anchor)
