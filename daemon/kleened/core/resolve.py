"""Resolving what a user typed (an *ident*) to one stored object id.

Order: exact id, then exact name, then a unique id prefix. Upstream lets the first SQL row win
when an ident matches several objects; we refuse and name the candidates instead.
"""

from __future__ import annotations

from .errors import Ambiguous
from .store import Store


def resolve(store: Store, kind: str, ident: str, *, by_name: bool = True) -> str | None:
    if not ident:
        return None
    if store.exists(kind, ident):
        return ident
    if by_name:
        named = store.ids_by_name(kind, ident)
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise Ambiguous(f"'{ident}' names several {kind}s: {', '.join(sorted(named))}")
    candidates = store.ids_by_prefix(kind, ident)
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise Ambiguous(f"'{ident}' is an ambiguous {kind} id prefix, matching: {', '.join(sorted(candidates))}")
    return None
