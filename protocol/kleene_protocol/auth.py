"""Registry credentials files, shared by `klee login` (which writes one) and kleened (which reads one).

The format is Docker's `config.json` subset, `{"auths": {"<registry>": {"auth": "<base64 user:password>"}}}`,
so an existing Docker file can be pointed at. Registry keys are host[:port]; Docker Hub is `docker.io`
(Docker's own `https://index.docker.io/v1/` key is read as that too).
"""

from __future__ import annotations

import base64
import binascii

import msgspec

HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")


class AuthEntry(msgspec.Struct, omit_defaults=True):
    auth: str = ""
    username: str = ""
    password: str = ""


class AuthFile(msgspec.Struct):
    auths: dict[str, AuthEntry] = msgspec.field(default_factory=dict)


def registry_key(registry: str) -> str:
    host = registry.strip().removeprefix("https://").removeprefix("http://").split("/")[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") or registry in HUB_KEYS else host


def decode(data: bytes) -> AuthFile:
    """Raises ValueError with a readable message."""
    try:
        return msgspec.json.decode(data, type=AuthFile) if data.strip() else AuthFile()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"invalid credentials file: {exc}") from None


def encode(auth: AuthFile) -> bytes:
    return msgspec.json.format(msgspec.json.encode(auth), indent=2) + b"\n"


def lookup(auth: AuthFile, registry: str) -> tuple[str, str] | None:
    """(username, password) for `registry`, or None."""
    wanted = registry_key(registry)
    for key, entry in auth.auths.items():
        if registry_key(key) != wanted:
            continue
        if entry.auth:
            try:
                user, sep, password = base64.b64decode(entry.auth).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if sep:
                return user, password
        if entry.username:
            return entry.username, entry.password
    return None


def store(auth: AuthFile, registry: str, username: str, password: str) -> AuthFile:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return AuthFile(auths={**auth.auths, registry_key(registry): AuthEntry(auth=token)})


def remove(auth: AuthFile, registry: str) -> AuthFile:
    wanted = registry_key(registry)
    return AuthFile(auths={k: v for k, v in auth.auths.items() if registry_key(k) != wanted})
