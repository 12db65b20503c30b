"""The build cache: which layer an earlier build made for the same step on the same layers.

Upstream has no cache (every build reruns every step); the cache is an extension that a build asks for with
`ImageBuildConfig.cache`, so upstream klee gets upstream's behaviour.

A *key* is the sha256 of everything a step's result depends on: the layer stack it runs on, the build state it sees
(RUN's environment, which holds ENV and the ARGs in scope, the user and the working directory), the build
container's configuration (mounts, jail parameters), the expanded instruction, and for COPY a digest of the content
it copies. Since the layer stack is part of the key, a changed context file invalidates its COPY, which makes a new
layer, which changes the key of every later step.

An entry maps a key to a layer id, or to "" for a step that needed no layer (a WORKDIR whose directory existed).
Entries live in the store (kind `buildcache`) and own nothing: a layer is reused only while an image still stacks it,
so removing images never has to consult the cache, and an entry whose layer is gone is dropped when looked up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import msgspec

from ..clock import now_iso
from ..store import Store

BUILDCACHE = "buildcache"
_encoder = msgspec.json.Encoder()


class CacheEntry(msgspec.Struct, kw_only=True):
    layer: str  # "" when the step added no layer
    created: str
    snapshot: str = ""  # the snapshot the step was named by (RUN, COPY, ADD), reused with the layer


def cache_key(*parts: object) -> str:
    """sha256 of the JSON of `parts` (strings, numbers, lists, dicts): unambiguous, unlike joined strings."""
    return hashlib.sha256(_encoder.encode(parts)).hexdigest()


class BuildCache:
    """`image_layers` returns the layers images stack now; `layer_exists` checks the storage."""

    def __init__(
        self, store: Store, image_layers: Callable[[], Iterable[str]], layer_exists: Callable[[str], bool]
    ) -> None:
        self._store = store
        self._image_layers = image_layers
        self._layer_exists = layer_exists

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry cached for `key` (its layer is "" for a step without one), or None on a miss.

        Synchronous on purpose: the caller puts the layer into its build container's record before it next
        awaits, so an image removal cannot free the layer in between.
        """
        entry = self._store.get(BUILDCACHE, key, CacheEntry)
        if entry is None:
            return None
        if entry.layer and (entry.layer not in set(self._image_layers()) or not self._layer_exists(entry.layer)):
            self._store.delete(BUILDCACHE, key)  # its images are gone: the layer was freed or soon will be
            return None
        return entry

    def record(self, key: str, layer: str, snapshot: str = "") -> None:
        self._store.put(BUILDCACHE, key, CacheEntry(layer=layer, created=now_iso(), snapshot=snapshot),
                        created=now_iso())
