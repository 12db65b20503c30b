"""kleened's configuration: a YAML file with upstream's keys plus ours, and embedded defaults.

Upstream keys we honour: `api_listening_sockets` (with `address`, `tlscert`, `tlskey`,
`tlscacert`, `tlsverify`; `tlsdh` is accepted and ignored because OpenSSL 3 picks ECDHE groups),
`log_level`. Upstream keys that only mean something on a ZFS/pf host (`kleene_root`,
`pf_config_template_path`, `pf_config_path`, `enable_logging`) are read by the FreeBSD drivers
and ignored by Linux's, so an upstream config file loads unchanged. A file that selects the
FreeBSD drivers takes their defaults for the keys it leaves out (`platform/freebsd/settings.py`).
Our keys: `state_root`, `host_prefix`, the limits, and isolation (`seccomp_profile`,
`default_pids_limit`, `userns_remap`; checked against the host when the daemon starts), `backend`
(which drivers: `auto` picks them from the OS, see `wiring.select_backend`), and for pf on
FreeBSD `pf_mode` and `pf_anchor` (docs/freebsd.md).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

DEFAULT_CONFIG_PATH = (
    "/usr/local/etc/kleened/config.yaml" if sys.platform.startswith("freebsd") else "/etc/kleened/config.yaml"
)
DEFAULT_SOCKET = "http:///var/run/kleened.sock"

LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class ConfigError(Exception):
    pass


class ListenerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    address: str
    tlscert: str | None = None
    tlskey: str | None = None
    tlscacert: str | None = None
    tlsdh: str | None = None
    tlsverify: bool = False


class Config(msgspec.Struct, kw_only=True):
    api_listening_sockets: list[ListenerConfig] = msgspec.field(
        default_factory=lambda: [ListenerConfig(address=DEFAULT_SOCKET)]
    )
    log_level: LogLevel = "info"
    state_root: str = "/var/lib/kleened"
    # Every host-level name (bridges, veths, netns, nft table, cgroups, runc root) starts with
    # this, so a test daemon runs beside a live one. Short: interface names have 15 characters.
    host_prefix: str = "kleene"
    max_request_body: int = 4 * 1024 * 1024  # bytes
    max_ws_message: int = 1024 * 1024  # bytes, one client frame
    stop_timeout: float = 3.0  # seconds between TERM and KILL; under klee's 5 s REST deadline
    # Containers outlive kleened (docs/containers.md, "Live restore"): stopping or killing it
    # leaves them running under their monitors and the next start adopts them. Off: a shutdown
    # stops every container, and a start after a crash stops what still runs.
    live_restore: bool = False
    # Container logs, attach and events (docs/streams.md). A container's log takes at most
    # about log_max_size * log_max_files bytes of disk.
    log_max_size: int = 10 * 1024 * 1024  # bytes per log file; then it rotates
    log_max_files: int = 5  # files kept per container, the one being written included
    log_buffer: int = 4 * 1024 * 1024  # bytes of output waiting for the disk before the container waits
    log_recent: int = 64 * 1024  # bytes of the latest output kept in memory for attach's recent lines
    attach_buffer: int = 4 * 1024 * 1024  # bytes an attached client may fall behind before it is dropped
    detach_keys: str = "ctrl-p,ctrl-q"  # docker's syntax
    events_history: int = 1000  # events kept for `since`
    events_buffer: int = 1024  # events a subscriber may fall behind before it is dropped
    # Registries (docs/images.md): short names resolve against `default_registry`; the hosts in
    # `insecure_registries` (host[:port]) are spoken to over plain HTTP; `registry_ca_file` adds a
    # CA to the system's for TLS; `registry_auth_file` holds credentials (`klee login`'s format).
    default_registry: str = "docker.io"
    insecure_registries: list[str] = msgspec.field(default_factory=list)
    registry_ca_file: str | None = None
    registry_auth_file: str = "/etc/kleened/registry-auth.json"
    registry_concurrency: int = 3  # layers downloaded or uploaded at once per pull or push
    registry_retries: int = 3  # attempts after the first for a request or a layer that breaks
    # `cp` into a container (docs/operations.md): one upload writes at most this much.
    cp_max_bytes: int = 16 * 1024**3  # bytes of file content
    cp_max_entries: int = 1_000_000  # files, directories and links
    # Isolation and resource control (docs/security.md).
    seccomp_profile: str = ""  # "": the built-in profile; "unconfined"; or the path of a JSON profile
    default_pids_limit: int = 2048  # tasks per container without a pids limit of its own; 0: none
    userns_remap: str = ""  # "": off; USER[:GROUP] (ranges from /etc/subuid, /etc/subgid) or UID:GID:SIZE
    # The host drivers: "auto" chooses by the operating system (wiring.select_backend).
    # "freebsd-simulated": the FreeBSD drivers against stand-in tools on PATH, a test rig on Linux.
    backend: Literal["auto", "linux", "freebsd", "freebsd-simulated"] = "auto"
    # pf on FreeBSD (docs/freebsd.md): "file" fills the template into pf_config_path (upstream's
    # way); "anchor" loads kleened's rules into the anchor `pf_anchor` and never writes pf.conf.
    pf_mode: Literal["file", "anchor"] = "file"
    pf_anchor: str = "kleened"
    # Accepted for compatibility with upstream config files; meaningless on Linux.
    kleene_root: str | None = None
    pf_config_template_path: str | None = None
    pf_config_path: str | None = None
    enable_logging: bool | None = None


class Listener(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed `api_listening_sockets` entry."""

    tls: bool
    unix_path: str | None = None
    host: str | None = None
    port: int | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    verify: bool = False

    @property
    def bind(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def describe(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.unix_path or self.bind}" + (" (client certificates required)" if self.verify else "")


def parse_listener(entry: ListenerConfig) -> Listener:
    """Apply upstream's address rules: literal IPs only, `http:///path` is a unix socket."""
    address = entry.address
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"invalid listening address '{address}': the scheme must be http or https")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"invalid listening address '{address}': no userinfo, query or fragment allowed")
    tls = parts.scheme == "https"
    files = {"tlscert": entry.tlscert, "tlskey": entry.tlskey, "tlscacert": entry.tlscacert, "tlsdh": entry.tlsdh}
    for key, value in files.items():
        if value is not None and not os.path.isfile(value):
            raise ConfigError(f"file in '{key}' does not exist.")
    if tls and not entry.tlscert:
        raise ConfigError(f"invalid listening address '{address}': https needs 'tlscert'")
    if entry.tlsverify and not entry.tlscacert:
        raise ConfigError(f"invalid listening address '{address}': 'tlsverify' needs 'tlscacert'")
    common = dict(
        tls=tls,
        certfile=entry.tlscert if tls else None,
        keyfile=(entry.tlskey or entry.tlscert) if tls else None,
        cafile=entry.tlscacert if tls else None,
        verify=entry.tlsverify and tls,
    )
    if not parts.netloc:
        path = parts.path
        if not path.startswith("/") or path == "/":
            raise ConfigError(f"invalid listening address '{address}': a unix socket needs an absolute path")
        if os.path.isdir(path):
            raise ConfigError(f"invalid listening address '{address}': '{path}' is a directory")
        return Listener(unix_path=path, **common)
    if parts.path not in ("", "/"):
        raise ConfigError(f"invalid listening address '{address}': a TCP address has no path")
    try:
        host = parts.hostname or ""
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"invalid listening address '{address}': the host must be a literal IP address") from None
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ConfigError(f"invalid listening address '{address}': bad port") from None
    return Listener(host=host, port=port, **common)


def load(path: str | None) -> Config:
    """Load `path`, or the platform default when it exists, or the embedded defaults."""
    chosen = path or DEFAULT_CONFIG_PATH
    if not Path(chosen).exists():
        if path is not None:
            raise ConfigError(f"config file '{path}' does not exist")
        return _with_defaults({})
    try:
        raw = Path(chosen).read_bytes()
        given = msgspec.yaml.decode(raw) if raw.strip() else {}
        if not isinstance(given, dict):
            raise ConfigError(f"invalid config file '{chosen}': not a mapping of keys to values")
        config = _with_defaults(given)
    except (msgspec.DecodeError, msgspec.ValidationError, OSError) as exc:
        raise ConfigError(f"invalid config file '{chosen}': {exc}") from None
    if not config.api_listening_sockets:
        raise ConfigError("'api_listening_sockets' must name at least one listener")
    _check_stream_limits(config)
    if config.registry_concurrency < 1 or config.registry_retries < 0:
        raise ConfigError("'registry_concurrency' must be >= 1 and 'registry_retries' >= 0")
    if config.registry_ca_file is not None and not os.path.isfile(config.registry_ca_file):
        raise ConfigError(f"file in 'registry_ca_file' does not exist: {config.registry_ca_file}")
    if config.default_pids_limit < 0:
        raise ConfigError("'default_pids_limit' must be 0 (no default limit) or more")
    if len(config.host_prefix) > 8 or not config.host_prefix.isalnum():
        raise ConfigError("'host_prefix' must be 1 to 8 letters or digits (it starts 15-character interface names)")
    return config


def _with_defaults(given: dict) -> Config:
    """`given` over the defaults of the drivers it selects: the FreeBSD drivers have their own
    (`platform/freebsd/settings.py`: no default pids limit without racct, seccomp unconfined, ...)."""
    backend = given.get("backend", "auto")
    if backend == "freebsd-simulated" or (backend in ("auto", "freebsd") and sys.platform.startswith("freebsd")):
        from .platform.freebsd.settings import FREEBSD_DEFAULTS

        given = {**FREEBSD_DEFAULTS, **given}
    return msgspec.convert(given, type=Config, strict=False)


def _check_stream_limits(config: Config) -> None:
    from .core.attach import parse_detach_keys
    from .core.errors import InvalidArgument

    if min(config.log_max_size - 4096, config.log_max_files - 1, config.log_buffer - 65536,
           config.attach_buffer - 65536, config.events_history, config.events_buffer - 1) < 0:
        raise ConfigError("log_max_size must be >= 4096, log_buffer and attach_buffer >= 65536, log_max_files and "
                          "events_buffer >= 1, events_history >= 0")
    try:
        parse_detach_keys(config.detach_keys)
    except InvalidArgument as exc:
        raise ConfigError(exc.message) from None
