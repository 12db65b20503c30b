"""`RUN --mount=...` specifications: parsed and checked at parse time, values expanded when the RUN resolves.

The value is a comma-separated list of `key=value` fields (CSV quoting, as BuildKit reads it); a bare key is a true
boolean. Types and their fields (BuildKit's, with its defaults):
- `bind` (the default type): `target` (required), `source` (default the root), `from` (a stage or an image; default
  the build context), `rw`/`readwrite` (writes are discarded after the RUN; read-only by default);
- `cache`: `target` (required), `id` (default the target), `ro`/`readonly`, `sharing` (`shared`, `private`,
  `locked`), `from` and `source` (what a new cache starts with), `mode` (octal, 0755), `uid`, `gid` (0);
- `tmpfs`: `target` (required), `size` (bytes, with an optional k/m/g suffix);
- `secret`: `id` (default the target's base name), `target` (default `/run/secrets/<id>` unless `env` is given),
  `env` (also give the secret to the command in this variable), `required` (default false), `mode` (0400), `uid`,
  `gid`.
`type=ssh` is refused: kleened has no SSH agent to forward.

Keys are never expanded; values are, with the ARGs and ENV in scope (so `target=$HOME/.cache` works). A value with
a `$` is checked after expansion (an `ExpansionError` at build time); everything else at parse time.
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .expand import ExpansionError
from .instructions import DockerfileError, error

if TYPE_CHECKING:
    from .scope import BuildScope

TYPES = ("bind", "cache", "tmpfs", "secret")
SHARING = ("shared", "private", "locked")
SECRET_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
_SIZE = re.compile(r"([0-9]+)([kmg]?)b?\Z", re.IGNORECASE)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_FIELDS = {
    "bind": {"target", "source", "from", "rw", "readwrite", "readonly", "ro"},
    "cache": {"target", "id", "ro", "readonly", "sharing", "from", "source", "mode", "uid", "gid"},
    "tmpfs": {"target", "size"},
    "secret": {"target", "id", "env", "required", "mode", "uid", "gid"},
}
_ALIASES = {"dst": "target", "destination": "target", "src": "source", "readwrite": "rw", "readonly": "ro"}


@dataclass(frozen=True, slots=True, kw_only=True)
class MountSpec:
    """One `--mount`. Before `resolve`, `fields` holds the raw values; after it, the typed attributes are set."""

    type: str
    fields: tuple[tuple[str, str], ...] = ()
    target: str = ""
    source: str = ""
    from_: str | None = None
    read_only: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    size: int | None = None
    env: str = ""
    required: bool = False

    def resolve(self, scope: BuildScope, line: str) -> MountSpec:
        values = {key: scope.expand(value, line=line) for key, value in self.fields}
        try:
            return _typed(self.type, values, line)
        except DockerfileError as exc:
            raise ExpansionError(exc.message, "invalid mount") from None


def parse_mount(value: str, line: str) -> MountSpec:
    """A `--mount` value, checked as far as it can be without expansion. Raises `DockerfileError`."""
    try:
        fields = next(csv.reader([value], skipinitialspace=False))
    except (csv.Error, StopIteration):
        raise error(line, f"invalid --mount value '{value[:64]}'") from None
    pairs: list[tuple[str, str]] = []
    kind = "bind"
    for field in fields:
        key, eq, raw = field.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if key == "type":
            kind = raw.strip().lower()
            continue
        pairs.append((key, raw if eq else "true"))
    if kind == "ssh":
        raise error(line, "RUN --mount=type=ssh is not supported: kleened has no SSH agent to forward")
    if kind not in TYPES:
        raise error(line, f"RUN --mount: unknown mount type '{kind[:32]}' (use bind, cache, tmpfs or secret)")
    for key, _ in pairs:
        if key not in _FIELDS[kind] and key not in ("rw", "ro"):
            raise error(line, f"RUN --mount=type={kind}: unknown option '{key[:32]}'")
        if (key == "rw" and kind != "bind") or (key == "ro" and kind not in ("bind", "cache")):
            raise error(line, f"RUN --mount=type={kind}: unknown option '{key}'")
    literal = {k: v for k, v in pairs if "$" not in v}
    if len(literal) == len(pairs):
        _typed(kind, dict(pairs), line)  # every value is known now: check it all at parse time
    elif "target" in literal or kind in ("bind", "cache", "tmpfs"):
        _check_known(kind, literal, line)
    return MountSpec(type=kind, fields=tuple(pairs))


def _check_known(kind: str, values: dict[str, str], line: str) -> None:
    """The checks that need no other field, for a spec whose other values wait for expansion."""
    for key, value in values.items():
        if key in ("mode", "uid", "gid", "size", "required", "rw", "ro", "sharing"):
            _typed(kind, {"target": "/x", "id": "x", key: value}, line)


def _typed(kind: str, values: dict[str, str], line: str) -> MountSpec:
    target = values.get("target", "")
    spec = MountSpec(type=kind, target=_target(target, line) if target else "")
    if kind == "bind":
        return replace(_need_target(spec, line), source=values.get("source", ""), from_=values.get("from"),
                       read_only=not _bool(values, "rw", False, line))
    if kind == "cache":
        sharing = values.get("sharing", "shared").lower()
        if sharing not in SHARING:
            raise error(line, f"RUN --mount=type=cache: invalid sharing '{sharing[:32]}' (shared, private or locked)")
        return replace(_need_target(spec, line), id=values.get("id") or spec.target, sharing=sharing,
                       read_only=_bool(values, "ro", False, line), from_=values.get("from"),
                       source=values.get("source", ""), mode=_octal(values.get("mode"), line),
                       uid=_number(values, "uid", line), gid=_number(values, "gid", line))
    if kind == "tmpfs":
        return replace(_need_target(spec, line), size=_size(values.get("size"), line))
    return _secret(spec, values, line)


def _secret(spec: MountSpec, values: dict[str, str], line: str) -> MountSpec:
    secret_id = values.get("id") or (posixpath.basename(spec.target) if spec.target else "")
    if not secret_id:
        raise error(line, "RUN --mount=type=secret needs an id (or a target to take it from)")
    if not SECRET_ID.match(secret_id):
        raise error(line, f"RUN --mount=type=secret: invalid id '{secret_id[:64]}' (letters, digits, '_', '.', '-')")
    env = values.get("env", "")
    if env and not re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", env):
        raise error(line, f"RUN --mount=type=secret: invalid env name '{env[:64]}'")
    target = spec.target or ("" if env else f"/run/secrets/{secret_id}")
    return replace(spec, id=secret_id, target=target, env=env, required=_bool(values, "required", False, line),
                   mode=_octal(values.get("mode"), line), uid=_number(values, "uid", line),
                   gid=_number(values, "gid", line))


def _need_target(spec: MountSpec, line: str) -> MountSpec:
    if not spec.target:
        raise error(line, f"RUN --mount=type={spec.type} needs a target")
    return spec


def _target(value: str, line: str) -> str:
    """A target as written: relative ones join the working directory when the RUN runs (`resolve_target`)."""
    if "\0" in value:
        raise error(line, "RUN --mount: invalid target")
    return value


def resolve_target(target: str, workdir: str) -> str:
    return posixpath.normpath(posixpath.join(workdir or "/", target))


def _bool(values: dict[str, str], key: str, default: bool, line: str) -> bool:
    if key not in values:
        return default
    parsed = _BOOLEANS.get(values[key].strip().lower())
    if parsed is None:
        raise error(line, f"RUN --mount: invalid boolean '{values[key][:32]}' for {key}")
    return parsed


def _octal(value: str | None, line: str) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise error(line, f"RUN --mount: invalid mode '{value[:32]}' (octal, like 0755)") from None
    if not 0 <= mode <= 0o7777:
        raise error(line, f"RUN --mount: invalid mode '{value[:32]}'")
    return mode


def _number(values: dict[str, str], key: str, line: str) -> int:
    value = values.get(key, "0").strip()
    if not value.isdigit() or int(value) > 0xFFFFFFFE:
        raise error(line, f"RUN --mount: invalid {key} '{value[:32]}' (a number)")
    return int(value)


def _size(value: str | None, line: str) -> int | None:
    if value is None:
        return None
    m = _SIZE.match(value.strip())
    if m is None:
        raise error(line, f"RUN --mount=type=tmpfs: invalid size '{value[:32]}'")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
