"""Lenient decoding and compact encoding of API bodies.

Decoders are built once per type. Decoding is `strict=False`: the strings "true"/"false" are
booleans, as upstream accepts (klee sends `"start_container": "true"` and `"quiet": "false"`).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class BodyError(ValueError):
    """A request body that is not JSON, or not the expected shape. `str()` is readable."""

    def __init__(self, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


@functools.cache
def _decoder(type_: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(type_, strict=False)


def decode(body: bytes | str, type_: type[T]) -> T:
    try:
        return _decoder(type_).decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: catch it first
        raise BodyError(str(exc), malformed=False) from None
    except msgspec.DecodeError as exc:
        raise BodyError(str(exc), malformed=True) from None


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
