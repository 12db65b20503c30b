"""Identifiers: 12 lowercase hex characters, never all digits (jail(8) would read a jid)."""

from __future__ import annotations

import re
import secrets

ID_LENGTH = 12
_ID = re.compile(r"(?![0-9]{12}\Z)[0-9a-f]{12}")


def new_id() -> str:
    while True:
        candidate = secrets.token_hex(16)[:ID_LENGTH]
        if not candidate.isdigit():
            return candidate


def is_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))
