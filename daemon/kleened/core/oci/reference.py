"""Registry references: `[registry/]repository[:tag][@algorithm:hex]`, resolved as Docker does.

Vocabulary: a *reference* names an image in a registry; its *familiar name* is what the image
is called locally (Docker's rule: the default registry and Docker Hub's `library/` are left
out, so `docker.io/library/busybox:latest` is `busybox:latest` here, and `busybox` keeps
resolving to the local image of that name, as it always did).

Short names: a first component without `.` or `:` that is not `localhost` is a repository on
the default registry; on Docker Hub a one-component repository lives under `library/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HUB_ENDPOINT = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class ReferenceError_(ValueError):
    """A reference that does not parse; `str()` says why, for the client."""


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise ReferenceError_(f"invalid digest '{digest}'")
    return digest


@dataclass(frozen=True)
class Reference:
    registry: str  # "docker.io", "127.0.0.1:5000"
    repository: str  # "library/busybox"
    tag: str = ""  # "" when only a digest is given
    digest: str = ""

    @property
    def endpoint(self) -> str:
        """The host to talk to (Docker Hub's API is not served at docker.io)."""
        return _HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What `/v2/<repo>/manifests/<target>` takes: the digest when pinned, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def familiar(self, default_registry: str = DOCKER_HUB) -> tuple[str, str]:
        """The local (name, tag): registry and `library/` dropped for the default registry."""
        name = f"{self.registry}/{self.repository}"
        if self.registry == default_registry:
            name = self.repository
            if self.registry == DOCKER_HUB and name.startswith("library/") and name.count("/") == 1:
                name = name.removeprefix("library/")
        return name, self.tag or "latest"


def parse(text: str, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse and normalise `text`; a missing tag (and digest) means `latest`."""
    if not text or len(text) > 4096:
        raise ReferenceError_(f"invalid reference '{text[:200]}'")
    rest, _, digest = text.partition("@")
    if digest:
        check_digest(digest)
    registry, path = _split_registry(rest, default_registry)
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise ReferenceError_(f"invalid tag '{tag}' in reference '{text}'")
    if not _REPOSITORY.fullmatch(path) or len(path) > 255:
        raise ReferenceError_(f"invalid repository name '{path}' in reference '{text}' (lowercase letters, "
                              "digits and separators)")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not tag and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest)


def _split_registry(text: str, default_registry: str) -> tuple[str, str]:
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _HOST.fullmatch(first):
            raise ReferenceError_(f"invalid registry host '{first}'")
        return (DOCKER_HUB if first in _HUB_ALIASES else first), rest
    return normalise_registry(default_registry), text


def normalise_registry(host: str) -> str:
    """`index.docker.io` and friends are `docker.io`; anything else is kept as given."""
    host = host.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    return DOCKER_HUB if host in _HUB_ALIASES else host


def looks_remote(text: str) -> bool:
    """Whether `text` can only mean a registry reference (it names a registry host or a digest)."""
    first, slash, _ = text.partition("/")
    return bool(slash and ("." in first or ":" in first or first == "localhost")) or "@sha256:" in text
