"""What a user may call an object: one rule for containers, networks and volumes, and the
image reference grammar for image names and tags. Shared by kleened (which enforces them) and
klee (which can check before sending).

Object names follow Docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters. It
accepts every container name upstream accepts (upstream's `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+` asks
for two characters; a leading `/` is stripped before the check) and refuses what upstream lets
through for networks and volumes (`""`, `../x`, `a/b`, NUL, newlines, 10,000 characters), which
then broke listings, paths and interface names.

Image names follow Docker's reference grammar (path components of lowercase letters, digits
and separators, an optional registry host[:port] first), except that upper case is allowed, as
upstream's own images are named `FreeBSD`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` or empty
(upstream's `name:`). Every check is a full match: `$` would let a trailing newline through.
"""

from __future__ import annotations

import re

MAX_NAME = 128
NAME_RULE = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_NAME = re.compile(NAME_RULE)

MAX_IMAGE_NAME = 255
_COMPONENT = r"[a-zA-Z0-9]+(?:(?:[._]|__|-+)[a-zA-Z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_IMAGE_NAME = re.compile(f"{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def shown(text: str, limit: int = 64) -> str:
    """`text` as an error message may quote it: control characters escaped, long text cut."""
    escaped = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def name_error(kind: str, name: str) -> str | None:
    """Why `name` cannot name a container, network or volume (`kind`); None when it can."""
    if len(name) > MAX_NAME:
        return f"invalid {kind} name '{shown(name)}': longer than {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return (f"invalid {kind} name '{shown(name)}': use letters, digits, '_', '.' and '-', "
                "starting with a letter or digit")
    return None


def image_name_error(name: str, tag: str) -> str | None:
    """Why `name:tag` cannot be given to an image; None when it can. `name` "" (untagged) is fine."""
    if not name:
        return None if not tag or tag == "latest" else f"invalid image tag '{shown(tag)}': a tag needs a name"
    if len(name) > MAX_IMAGE_NAME or not _IMAGE_NAME.fullmatch(name):
        return (f"invalid image name '{shown(name)}': use path components of letters, digits and "
                "'.', '_', '-' separators, joined by '/'")
    if tag and not _TAG.fullmatch(tag):
        return (f"invalid image tag '{shown(tag)}': use up to 128 letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-'")
    return None
