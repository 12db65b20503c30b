"""RUN cache mounts (`RUN --mount=type=cache`): directories that persist across builds, one per cache id.

A cache id is any string; its *key* is a hash of it (so an id is never a path: `id=/../../etc` names a cache like
any other). A key has numbered *instances*, directories the host driver keeps under its cache root; instance 0 is
the one everybody shares. Sharing modes (BuildKit's):
- `shared`: any number of RUNs use instance 0 at once;
- `locked`: a RUN waits until nobody else uses instance 0, and nobody else starts using it until it is done;
- `private`: a RUN takes an instance nobody uses, making a new one when all are busy.

The store keeps a record per key (kind `cachemount`, written before the directory is made: a directory without a
record is removed at start-up, `reconcile`). Use is tracked in memory only: a killed daemon leaves nothing to undo.
Prune removes every cache nobody uses now. The contents never enter a cache key: a cache mount is for speed, and a
build must work with any content in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
import trio

from ..clock import now_iso
from ..store import Store

log = logging.getLogger(__name__)

CACHEMOUNT = "cachemount"


class CacheHost(Protocol):
    def cache_path(self, key: str, instance: int) -> Path: ...
    def ensure_cache(self, key: str, instance: int, *, mode: int, uid: int, gid: int) -> bool: ...
    def list_caches(self) -> list[str]: ...
    def cache_size(self, key: str) -> int: ...
    def remove_cache(self, key: str) -> None: ...


class CacheRecord(msgspec.Struct, kw_only=True):
    key: str
    id: str
    created: str
    last_used: str = ""


@dataclass(frozen=True)
class PrunedCache:
    id: str
    bytes: int


def cache_key(cache_id: str) -> str:
    return hashlib.sha256(cache_id.encode(errors="surrogatepass")).hexdigest()[:32]


@dataclass(eq=False)
class _Use:
    users: dict[int, int] = field(default_factory=dict)  # instance -> RUNs using it
    locked: set[int] = field(default_factory=set)  # instances held by a `locked` RUN


Populate = Callable[[Path], Awaitable[None]]


class CacheMounts:
    """The cache mounts of this daemon."""

    def __init__(self, store: Store, host: CacheHost) -> None:
        self._store = store
        self._host = host
        self._uses: dict[str, _Use] = {}
        self._changed = trio.Condition()

    @contextlib.asynccontextmanager
    async def use(self, cache_id: str, sharing: str, *, mode: int, uid: int, gid: int,
                  populate: Populate | None = None) -> AsyncIterator[Path]:
        """The directory of cache `cache_id` for one RUN, held by `sharing`'s rules until the block ends.
        `populate` fills a cache instance made now (`from=`)."""
        key = cache_key(cache_id)
        use = self._uses.setdefault(key, _Use())
        async with self._changed:
            instance = await self._take(use, sharing)
        try:
            self._register(key, cache_id)
            created = await trio.to_thread.run_sync(
                lambda: self._host.ensure_cache(key, instance, mode=mode, uid=uid, gid=gid))
            path = self._host.cache_path(key, instance)
            if created and populate is not None:
                await populate(path)
            yield path
        finally:
            with trio.CancelScope(shield=True):
                async with self._changed:
                    use.users[instance] -= 1
                    use.locked.discard(instance)
                    self._changed.notify_all()

    async def _take(self, use: _Use, sharing: str) -> int:
        """Wait for an instance `sharing` allows and count this RUN as its user (the condition is held)."""
        if sharing == "private":
            instance = next((i for i in range(len(use.users) + 1) if not use.users.get(i)), 0)
        else:
            instance = 0
            while instance in use.locked or (sharing == "locked" and use.users.get(0)):
                await self._changed.wait()
            if sharing == "locked":
                use.locked.add(0)
        use.users[instance] = use.users.get(instance, 0) + 1
        return instance

    def _register(self, key: str, cache_id: str) -> None:
        record = self._store.get(CACHEMOUNT, key, CacheRecord) or CacheRecord(key=key, id=cache_id,
                                                                              created=now_iso())
        record.last_used = now_iso()
        self._store.put(CACHEMOUNT, key, record, created=record.created)

    def in_use(self, key: str) -> bool:
        use = self._uses.get(key)
        return use is not None and any(use.users.values())

    async def prune(self) -> list[PrunedCache]:
        """Remove every cache mount no RUN uses now; return what went, oldest first. Holds the lock that RUNs
        take a cache with, so none starts using a cache while it goes."""
        pruned = []
        async with self._changed:
            for record in self._store.all(CACHEMOUNT, CacheRecord, order="created ASC"):
                if self.in_use(record.key):
                    continue
                size = await trio.to_thread.run_sync(self._host.cache_size, record.key)
                self._store.delete(CACHEMOUNT, record.key)
                await trio.to_thread.run_sync(self._host.remove_cache, record.key)
                pruned.append(PrunedCache(id=record.id, bytes=size))
        log.info("build cache mounts pruned", extra={"count": len(pruned)})
        return pruned

    async def reconcile(self) -> list[str]:
        """At start-up: remove cache directories no record owns (a crash between the two)."""
        stray = [key for key in self._host.list_caches() if not self._store.exists(CACHEMOUNT, key)]
        for key in stray:
            log.warning("removing a cache mount directory without a record", extra={"cache": key})
            await trio.to_thread.run_sync(self._host.remove_cache, key)
        return stray
