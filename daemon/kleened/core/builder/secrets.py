"""Build secrets (`ImageBuildConfig.secrets`, `RUN --mount=type=secret`): checked when the build starts, kept out of
the build log, and looked for in the layer of every RUN that mounted one.

A secret reaches a RUN as a read-only file (a private host file bind-mounted for that RUN only) and, with `env=`,
as an environment variable of that process. It is never part of a cache key, the store or kleened's own log. What
the command prints is *redacted*: every occurrence of a secret's value (at least `MIN_REDACTED` characters long)
becomes `****` before it reaches the client, also across output chunks. A RUN whose new layer contains a secret's
bytes (a `cp /run/secrets/x /x`, an `echo $TOKEN > f`) fails, and its layer is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from .mountspec import SECRET_ID

MAX_SECRET = 500 * 1024  # bytes, BuildKit's limit
MAX_SECRETS = 64
MIN_REDACTED = 4  # shorter values would blank out ordinary text
MASK = "****"


class SecretError(ValueError):
    """The request's secrets are unusable; `str()` says why."""


def check_secrets(secrets: Mapping[str, bytes]) -> None:
    if len(secrets) > MAX_SECRETS:
        raise SecretError(f"at most {MAX_SECRETS} build secrets")
    for secret_id, value in secrets.items():
        if not SECRET_ID.match(secret_id):
            raise SecretError(f"invalid secret id '{secret_id[:64]}' (letters, digits, '_', '.', '-')")
        if len(value) > MAX_SECRET:
            raise SecretError(f"secret '{secret_id}' is larger than {MAX_SECRET} bytes")


def needles(values: list[bytes]) -> list[bytes]:
    """What to look for: each value without its trailing newline (a file secret usually has one; what finds the
    shorter form finds the longer), when it is long enough to tell."""
    found = {value.rstrip(b"\r\n") for value in values}
    return sorted((v for v in found if len(v) >= MIN_REDACTED), key=len, reverse=True)


class Redactor:
    """Replaces secret values in streamed text. It holds back the last `longest - 1` characters of each chunk (the
    start of a value that the next chunk may complete) and releases them with the next chunk or `flush`."""

    def __init__(self, values: list[bytes]) -> None:
        texts = {v.decode(errors="replace") for v in needles(values)}
        self._values = sorted(texts, key=len, reverse=True)
        self._hold = max((len(v) for v in self._values), default=1) - 1
        self._pending = ""

    def feed(self, text: str) -> str:
        if not self._values:
            return text
        window = self._redact(self._pending + text)
        cut = max(len(window) - self._hold, 0)
        self._pending = window[cut:]
        return window[:cut]

    def flush(self) -> str:
        out, self._pending = self._redact(self._pending), ""
        return out

    def _redact(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        return text
