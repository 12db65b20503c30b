"""The image a build makes from its last stage, and finding an identical image an earlier build made.

An unchanged rebuild with the cache reuses every layer and every snapshot name, so its image is equal, field for
field, to the one the earlier build stored, except for the id and the creation time. Docker then returns the
existing image (same id) and moves the tag to it; so does kleened (`same_image`), within one rule of its own: an
image has one name:tag, so an existing image tagged otherwise is not retagged (the build stores a new one).
"""

from __future__ import annotations

from collections.abc import Iterable

from kleene_protocol.models import Image

from ..clock import now_iso
from ..records import ImageRecord
from .cache import cache_key
from .steps import Stage

_IDENTITY_EXCLUDED = {"id", "name", "tag", "created", "dataset"}


def image_record(stage: Stage, *, lines: list[tuple[str, str]], name: str, tag: str, image_id: str, dataset: str,
                 labels: dict[str, str]) -> ImageRecord:
    """The image of `stage`; `lines` are `(instruction, snapshot)` in build order, `labels` override the stage's
    (the request's `labels`)."""
    return ImageRecord(
        id=image_id, name=name, tag=tag, cmd=stage.cmd, env=list(stage.env), user=stage.user,
        instructions=[[line, snap if snap in stage.snapshots else ""] for line, snap in lines],
        created=now_iso(), dataset=dataset, workdir=stage.workdir, entrypoint=stage.entrypoint,
        exposed_ports=list(stage.exposed_ports), labels={**stage.labels, **labels}, volumes=list(stage.volumes),
        stop_signal=stage.stop_signal, shell=list(stage.shell), healthcheck=stage.healthcheck,
        onbuild=list(stage.onbuild), layers=list(stage.layers), snapshots=dict(stage.snapshots),
        parent_id=stage.parent_id,
    )


def identity(record: ImageRecord) -> str:
    """What makes two images the same image: everything but the id, the name:tag, the time and the dataset path."""
    fields = [name for name in Image.__struct_fields__ if name not in _IDENTITY_EXCLUDED]
    return cache_key([getattr(record, name) for name in fields], record.layers, record.snapshots, record.parent_id)


def same_image(records: Iterable[ImageRecord], built: ImageRecord) -> ImageRecord | None:
    """An existing image identical to `built` that the build may return instead: one with the same name:tag, or
    untagged, or any when the build asks for no tag. None when the build must store its own."""
    wanted = identity(built)
    for record in records:
        if record.layers != built.layers or identity(record) != wanted or record.tag == "failed":
            continue
        if not built.name or record.nametag == built.nametag or not (record.name or record.tag):
            return record
    return None
