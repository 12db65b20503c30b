"""The one table from core error classes to HTTP statuses."""

from __future__ import annotations

from ..core import errors

STATUS: dict[type[errors.KleeneError], int] = {
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.InvalidArgument: 400,
    errors.Conflict: 409,
    errors.Ambiguous: 409,
    errors.ExecFailed: 400,
    errors.Unavailable: 501,
    errors.Internal: 500,
}


def status_for(exc: errors.KleeneError, overrides: dict[type[errors.KleeneError], int] | None = None) -> int:
    for cls in type(exc).__mro__:
        if overrides and cls in overrides:
            return overrides[cls]
        if cls in STATUS:
            return STATUS[cls]
    return 500
