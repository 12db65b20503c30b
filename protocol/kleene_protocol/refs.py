"""Image references: `name[:tag][@snapshot]` and `id[@snapshot]`.

Upstream crashes (HTTP 500) on two `:` or two `@`; here they are a `ReferenceError_` that the
daemon turns into a 4xx with a message.
"""

from __future__ import annotations

import msgspec


class InvalidReference(ValueError):
    pass


class ImageRef(msgspec.Struct, frozen=True):
    """A parsed reference. `snapshot` keeps its leading `@` ("" when absent), as upstream."""

    name: str
    tag: str
    snapshot: str = ""

    @property
    def nametag(self) -> str:
        return f"{self.name}:{self.tag}"


def split_snapshot(text: str) -> tuple[str, str]:
    """`"x@abc"` -> `("x", "@abc")`; `"x"` -> `("x", "")`."""
    parts = text.split("@")
    if len(parts) > 2:
        raise InvalidReference(f"invalid image reference '{text}': more than one '@'")
    if len(parts) == 2:
        if not parts[1]:
            raise InvalidReference(f"invalid image reference '{text}': empty snapshot")
        return parts[0], "@" + parts[1]
    return text, ""


def split_nametag(text: str) -> tuple[str, str]:
    """`""` -> `("", "")`, `"n"` -> `("n", "latest")`, `"n:t"` -> `("n", "t")`, `"n:"` -> `("n", "")`.

    A name may start with a registry host and port, as pulled images' names do
    (`127.0.0.1:5000/app:1` -> `("127.0.0.1:5000/app", "1")`): a ':' followed by a '/' is a
    port, never a tag. Any other second ':' is refused.
    """
    if text == "":
        return "", ""
    first_slash = text.find("/")
    host_colon = text.find(":")
    skip = first_slash if 0 <= host_colon < first_slash else 0  # "host:port/..." keeps its port
    head, rest = text[:skip], text[skip:]
    parts = rest.split(":")
    if len(parts) > 2:
        raise InvalidReference(f"invalid name and tag '{text}': more than one ':'")
    if len(parts) == 2 and "/" in parts[1]:
        raise InvalidReference(f"invalid name and tag '{text}': a tag cannot contain '/'")
    if len(parts) == 1:
        return head + parts[0], "latest"
    return head + parts[0], parts[1]


def parse_image_ref(text: str) -> ImageRef:
    nametag, snapshot = split_snapshot(text)
    name, tag = split_nametag(nametag)
    return ImageRef(name=name, tag=tag, snapshot=snapshot)
