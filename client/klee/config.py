"""Where klee's settings come from: root flags > environment > config file > defaults.

Vocabulary: *flags* are the root options given on the command line (None when absent); the
*config file* is `klee_config.yaml`, searched at `--config`, `$KLEE_CONFIG`, then the default
locations. `yaml` is imported only when a config file exists, so most runs never load it.

One deliberate difference from upstream klee: `KLEE_TLS_CERT` sets the client certificate
(upstream maps it to the CA certificate) and `KLEE_TLS_KEY` sets its key (upstream reads a
misspelt `KLEE_TLS_KERY`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from klee.errors import UsageError

DEFAULT_HOST = "http:///var/run/kleened.sock"
THEMES = ("fancy", "simple")
CONFIG_KEYS = ("host", "tlsverify", "tlscert", "tlskey", "tlscacert", "theme")

ENVIRONMENT = {
    "KLEE_HOST": "host",
    "KLEE_TLS_VERIFY": "tlsverify",
    "KLEE_TLS_CACERT": "tlscacert",
    "KLEE_TLS_CERT": "tlscert",
    "KLEE_TLS_KEY": "tlskey",
    "KLEE_THEME": "theme",
}

LOCAL_CONFIG = "klee_config.yaml"
USER_CONFIG = "~/.klee/klee_config.yaml"
SYSTEM_CONFIG = "/usr/local/etc/klee/klee_config.yaml" if "bsd" in sys.platform else "/etc/klee/klee_config.yaml"

ERROR_UNKNOWN_KEY = "Error! Config file {path} is not valid: parameter name '{key}' unknown"
ERROR_PARSE = "Error! Could not parse config at {path}"
ERROR_TLSKEY = "When '--tlscert' is set you must also provide the '--tlskey'"


class Settings(NamedTuple):
    """The resolved settings of one klee run."""

    host: str = DEFAULT_HOST
    tlsverify: bool = False
    tlscert: str | None = None
    tlskey: str | None = None
    tlscacert: str | None = None
    theme: str = "fancy"
    config_path: str | None = None  # the config file that was loaded, if any


def default_locations() -> list[str]:
    """Config files tried when neither `--config` nor `$KLEE_CONFIG` is set, in order."""
    return [LOCAL_CONFIG, USER_CONFIG, SYSTEM_CONFIG]


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Settings:
    """Merge flags, environment, config file and defaults into `Settings`.

    `flags` holds the root options (`host`, `tlsverify`, `tlscert`, `tlskey`, `tlscacert`,
    `theme`, `config`); None means "not given". `warn` receives the messages about config files
    that were skipped (stderr by default). Raises `UsageError` for invalid settings.
    """
    environ = os.environ if environ is None else environ
    warn = warn or _warn_stderr
    env = _from_environment(environ)
    explicit = flags.get("config") or environ.get("KLEE_CONFIG") or None
    found = load_config_file(explicit, warn)
    path, file_values = found if found is not None else (None, {})

    merged: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        for source in (flags, env, file_values):
            if source.get(key) is not None:
                merged[key] = source[key]
                break
    settings = Settings(config_path=path, **merged)
    _check(settings)
    return settings


def load_config_file(explicit: str | None, warn: Callable[[str], None]) -> tuple[str, dict[str, Any]] | None:
    """The first readable and parseable config file as `(path, values)`, or None.

    An explicit file (`--config`, `$KLEE_CONFIG`) is the only candidate and must exist. A file
    that does not parse is reported through `warn` and the next location is tried.
    """
    candidates = [explicit] if explicit else default_locations()
    for candidate in candidates:
        path = os.path.expanduser(candidate)
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            if explicit:
                raise UsageError(f"Error! Config file {path} not found") from None
            continue
        except (OSError, UnicodeDecodeError) as exc:
            warn(f"Error! Could not read config at {path}: {exc}")
            continue
        import yaml  # only when there is a file to parse: it costs ~40 ms

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            warn(ERROR_PARSE.format(path=path))
            continue
        return path, _validate_file(path, {} if data is None else data)
    return None


def _validate_file(path: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UsageError(f"Error! Config file {path} is not valid: expected 'parameter: value' lines")
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            raise UsageError(ERROR_UNKNOWN_KEY.format(path=path, key=key))
        if value is None:
            continue
        if key == "tlsverify":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                data[key] = value.lower() == "true"
            elif not isinstance(value, bool):
                raise UsageError(f"Error! Config file {path} is not valid: 'tlsverify' must be true or false")
        elif not isinstance(value, str):
            raise UsageError(f"Error! Config file {path} is not valid: '{key}' must be a string")
    return data


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, key in ENVIRONMENT.items():
        value = environ.get(variable)
        if value is None or value == "":
            continue
        values[key] = value.lower() == "true" if key == "tlsverify" else value
    return values


def _check(settings: Settings) -> None:
    if settings.theme not in THEMES:
        raise UsageError(f"Error! Unknown theme '{settings.theme}': use 'fancy' or 'simple'")
    if settings.tlscert is not None and settings.tlskey is None:
        raise UsageError(ERROR_TLSKEY)


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr)
