"""Our images as OCI blobs: each layer as a blob (the original registry blob when the target
has it or can mount it, else our own deterministic tar, its digest measured once and kept),
and the image config built from the image's fields. Shared by push and save."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..records import ImageRecord
from .interfaces import LayerFiles
from .layers import LayerIndex, LayerRecord, PackedRef
from .manifest import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    Descriptor,
    History,
    ImageConfig,
    ImageManifest,
    RootFS,
    host,
    run_config,
)

MEDIA_TYPES = {"gzip": OCI_LAYER_GZIP, "": OCI_LAYER}


@dataclass(frozen=True)
class LayerBlob:
    """One layer of an exported image: its descriptor and diff id; `own` when it is our tar."""

    layer_id: str
    descriptor: Descriptor
    diff_id: str
    own: bool


async def own_blob(index: LayerIndex, files: LayerFiles, storage_path: Callable[[str], Path], layer_id: str,
                   compression: str) -> LayerBlob:
    """The layer as our own tar, measured now unless a measure for this tar format was kept."""
    key = f"{compression}/{files.version}"
    record = index.get(layer_id)
    packed = record.packed.get(key) if record else None
    if packed is None:
        measured = await files.measure(storage_path(layer_id), compression)
        packed = PackedRef(digest=measured.digest, size=measured.size, diff_id=measured.diff_id)
        record = record or LayerRecord(id=layer_id, diff_id=measured.diff_id)
        record.packed[key] = packed
        index.put(record)
    desc = Descriptor(mediaType=MEDIA_TYPES[compression], digest=packed.digest, size=packed.size)
    return LayerBlob(layer_id, desc, packed.diff_id, own=True)


def config_blob(image: ImageRecord, layers: list[LayerBlob]) -> bytes:
    """The image config of `image` with these layers (deterministic for the same inputs)."""
    platform = host()
    config = ImageConfig(
        created=image.created, architecture=image.architecture or platform.architecture, os=image.os or platform.os,
        config=run_config(image), rootfs=RootFS(type="layers", diff_ids=[layer.diff_id for layer in layers]),
        history=[History(created=image.created, created_by="kleened") for _ in layers],
    )
    return msgspec.json.encode(config)


def manifest_blob(config: bytes, config_digest: str, layers: list[LayerBlob]) -> bytes:
    doc = ImageManifest(config=Descriptor(mediaType=OCI_CONFIG, digest=config_digest, size=len(config)),
                        layers=[layer.descriptor for layer in layers])
    return msgspec.json.encode(doc)
