"""The build cache's bookkeeping on a real store: keys, hits, entries whose layer no image holds any more."""

from __future__ import annotations

from kleened.core.builder.cache import BUILDCACHE, BuildCache, cache_key
from kleened.core.store import Store


def test_keys_are_unambiguous():
    assert cache_key("a", "bc") != cache_key("ab", "c")
    assert cache_key(["x"], 1) == cache_key(["x"], 1) != cache_key(["x"], "1")


def test_hits_misses_and_stale_entries(tmp_path):
    store = Store(tmp_path / "meta.sqlite")
    image_layers = {"l1"}
    existing = {"l1", "l2"}
    cache = BuildCache(store, lambda: image_layers, existing.__contains__)
    assert cache.lookup("k1") is None
    cache.record("k1", "l1", "@abcdefabcdef")
    cache.record("k2", "l2")  # a layer no image holds (an earlier stage's, a cancelled build's)
    cache.record("k3", "")  # a step that needed no layer
    hit = cache.lookup("k1")
    assert hit is not None and (hit.layer, hit.snapshot) == ("l1", "@abcdefabcdef")  # the snapshot name comes back
    assert cache.lookup("k3").layer == ""  # type: ignore[union-attr]
    assert cache.lookup("k2") is None and not store.exists(BUILDCACHE, "k2")  # dropped
    image_layers.clear()
    assert cache.lookup("k1") is None  # its image was removed: never reuse a layer that may be freed
    store.close()
