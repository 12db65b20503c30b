"""Layers by content: which layer directory holds which OCI layer, and layers in use.

A *diff id* is the digest of a layer's uncompressed tar (what an image config's
`rootfs.diff_ids` lists). A layer extracted from a registry blob is recorded under its layer
id with its diff id (the store's name column), so a later pull of any image that shares it
finds it and downloads nothing. Layers built here get a record when they are first exported
(push, save): the digest and size of their deterministic tar are kept, since computing them
means reading the whole layer.

Records are hints, never owners: a layer lives while an image or container stacks it (or a
pull holds a pin on it); a record whose layer is gone is dropped when met and at start-up.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterable, Iterator

import msgspec

from ..clock import now_iso
from ..store import Store

LAYER = "layer"


class BlobRef(msgspec.Struct, kw_only=True, frozen=True):
    """The registry blob a layer was extracted from (a push may mount it instead of uploading)."""

    digest: str
    media_type: str
    size: int
    registry: str = ""
    repository: str = ""


class PackedRef(msgspec.Struct, kw_only=True, frozen=True):
    """Our own tar of the layer (`LayerFiles.pack`): its blob digest and size, and its diff id."""

    digest: str
    size: int
    diff_id: str


class LayerRecord(msgspec.Struct, kw_only=True):
    id: str
    diff_id: str
    created: str = ""
    blob: BlobRef | None = None
    packed: dict[str, PackedRef] = msgspec.field(default_factory=dict)  # "<compression>/<version>" -> our tar


class LayerPins:
    """Layers a running operation is about to stack: no removal may take them meanwhile."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def held(self) -> set[str]:
        return {layer for layer, count in self._counts.items() if count > 0}

    @contextlib.contextmanager
    def holding(self) -> Iterator[Callable[[str], None]]:
        """A `pin(layer)` function; every pin taken through it is released when the block ends."""
        taken: list[str] = []

        def pin(layer: str) -> None:
            self._counts[layer] += 1
            taken.append(layer)

        try:
            yield pin
        finally:
            for layer in taken:
                self._counts[layer] -= 1
                if self._counts[layer] <= 0:
                    del self._counts[layer]


class LayerIndex:
    """The layer records in the store; `exists(layer_id)` asks the storage."""

    def __init__(self, store: Store, exists: Callable[[str], bool]) -> None:
        self._store = store
        self._exists = exists

    def find(self, diff_id: str, exclude: Iterable[str] = ()) -> str | None:
        """A layer holding `diff_id`, not in `exclude`; stale records are dropped on the way."""
        skip = set(exclude)
        for layer_id in sorted(self._store.ids_by_name(LAYER, diff_id)):
            if not self._exists(layer_id):
                self._store.delete(LAYER, layer_id)
            elif layer_id not in skip:
                return layer_id
        return None

    def get(self, layer_id: str) -> LayerRecord | None:
        return self._store.get(LAYER, layer_id, LayerRecord)

    def put(self, record: LayerRecord) -> None:
        created = record.created or now_iso()
        record.created = created
        self._store.put(LAYER, record.id, record, name=record.diff_id, created=created)

    def reconcile(self) -> list[str]:
        """Drop the records of layers that no longer exist; return their layer ids."""
        gone = [r.id for r in self._store.all(LAYER, LayerRecord) if not self._exists(r.id)]
        for layer_id in gone:
            self._store.delete(LAYER, layer_id)
        return gone
