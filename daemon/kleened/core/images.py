"""Images: resolution, listing, tagging, removal, pruning, and adding new ones.

Vocabulary: an *ident* is what a user types for an image (an id, an id prefix, `name` or
`name:tag`); a *reference* is an ident plus an optional `@<snapshot>` (what a container or a
FROM names); a *nametag* is `name:tag`.

Rules (upstream's, except where noted):
- resolution order is exact id, then name:tag, then a unique id prefix; upstream lets the first
  SQL row win when several match, we answer `Ambiguous` and name the candidates;
- a reference with two ':' or two '@' is an `InvalidArgument` (upstream crashes with a 500);
- only one image holds a non-empty name:tag: adding or tagging takes it from the older holder,
  which is left with name "" and tag "";
- an image cannot be removed while containers were created from it or images were built on it
  (`parent_id`); pruning repeats until nothing more goes, so unused chains collapse;
- layers are shared (a built image's stack starts with its parent's layers): removing an image
  frees only the layers that no remaining image or container stacks.
"""

from __future__ import annotations

import logging

import msgspec

from kleene_protocol.models import Image, ImageCreateConfig
from kleene_protocol.names import image_name_error, shown
from kleene_protocol.refs import InvalidReference, split_nametag, split_snapshot

from ..platform.base import HostCommandError, LayerStorage, RootfsSource
from .errors import Ambiguous, Internal, InvalidArgument, NotFound
from .events import Events
from .image_create import CreationFailed, Emit, create_image
from .lifecycle import Locks
from .oci.layers import LayerPins
from .records import CONTAINER, IMAGE, ContainerRecord, ImageRecord
from .store import Store

log = logging.getLogger(__name__)

IMAGE_NOT_FOUND = "image not found"


def _invalid(exc: InvalidReference) -> InvalidArgument:
    return InvalidArgument(str(exc))


def parse_nametag(nametag: str) -> tuple[str, str]:
    """`name[:tag]` -> (name, tag) to give an image; a bare name gets tag "latest", "" gives
    ("", ""). The name and tag must follow the reference grammar (`kleene_protocol.names`)."""
    try:
        name, tag = split_nametag(nametag)
    except InvalidReference as exc:
        raise _invalid(exc) from None
    if "@" in nametag:
        raise InvalidArgument(f"invalid name and tag '{shown(nametag)}': '@' is reserved for snapshots")
    if error := image_name_error(name, tag):
        raise InvalidArgument(error)
    return name, tag


class Images:
    """The image service. `storage` frees layers; `creator` fills new ones (image creation).

    Without a `creator` (a daemon wired without host access, or a test) every creation fails
    with a message saying so.
    """

    def __init__(self, store: Store, storage: LayerStorage, creator: RootfsSource | None = None,
                 events: Events | None = None, locks: Locks | None = None) -> None:
        self._store = store
        self._storage = storage
        self._creator = creator
        self._locks = locks if locks is not None else Locks()
        self.events = events if events is not None else Events()  # public: builds publish `image build`
        self.pins = LayerPins()  # layers a pull is about to stack: never removed meanwhile

    # --- lookups ----------------------------------------------------------------------------

    def find(self, ident: str) -> ImageRecord | None:
        """The image `ident` names, or None. Raises InvalidArgument and Ambiguous."""
        try:
            base, snapshot = split_snapshot(ident)
        except InvalidReference as exc:
            raise _invalid(exc) from None
        if snapshot:
            raise InvalidArgument(f"'{ident}' names a snapshot of an image, not an image")
        try:
            name, tag = split_nametag(base)
        except InvalidReference as exc:
            raise _invalid(exc) from None
        if not base:
            return None
        if self._store.exists(IMAGE, base):
            return self._get(base)
        if name:
            named = self._store.ids_by_name(IMAGE, f"{name}:{tag}")
            if len(named) > 1:  # only a concurrent write could do this: uniqueness is kept by add()
                raise Ambiguous(f"'{ident}' names several images: {', '.join(sorted(named))}")
            if named:
                return self._get(named[0])
        if ":" in base:
            return None
        candidates = self._store.ids_by_prefix(IMAGE, base)
        if len(candidates) > 1:
            raise Ambiguous(f"'{ident}' is an ambiguous image id prefix, matching: {', '.join(sorted(candidates))}")
        return self._get(candidates[0]) if candidates else None

    def resolve(self, ident: str) -> ImageRecord:
        """Like `find`, but a missing image is `NotFound("no such image '<ident>'")`."""
        record = self.find(ident)
        if record is None:
            raise NotFound(f"no such image '{ident}'")
        return record

    def resolve_ref(self, ref: str) -> tuple[ImageRecord, str]:
        """`<ident>[@<snapshot>]` -> (image, snapshot or ""); the snapshot must exist."""
        try:
            base, snapshot = split_snapshot(ref)
        except InvalidReference as exc:
            raise _invalid(exc) from None
        record = self.resolve(base)
        if snapshot and snapshot not in record.snapshots:
            raise NotFound(f"invalid snapshot {snapshot}")
        return record, snapshot

    def get(self, image_id: str) -> ImageRecord | None:
        """The image with exactly this id, or None."""
        return self._store.get(IMAGE, image_id, ImageRecord)

    def _get(self, image_id: str) -> ImageRecord:
        record = self.get(image_id)
        if record is None:
            raise NotFound(f"no such image '{image_id}'")
        return record

    def records(self) -> list[ImageRecord]:
        """Every image record, newest first."""
        return self._store.all(IMAGE, ImageRecord)

    def list(self) -> list[Image]:
        return [record.to_api() for record in self.records()]

    def inspect(self, ident: str) -> Image:
        record = self.find(ident)
        if record is None:
            raise NotFound(IMAGE_NOT_FOUND)
        return record.to_api()

    def referenced_layers(self) -> set[str]:
        """Every layer an image or a container stacks, or a pull holds: what a removal must keep."""
        layers = {layer for record in self.records() for layer in record.layers} | self.pins.held()
        return layers | {layer for c in self._containers() for layer in c.layers}

    def _containers(self) -> list[ContainerRecord]:
        return self._store.all(CONTAINER, ContainerRecord)

    # --- writes -----------------------------------------------------------------------------

    def add(self, record: ImageRecord) -> None:
        """Store `record` (insert or replace); a non-empty name:tag is taken from its older holder.

        An empty name is exempt: any number of images may be untagged (or `:failed`).
        """
        with self._store.transaction():
            if record.name:
                for other_id in self._store.ids_by_name(IMAGE, record.nametag):
                    if other_id != record.id:
                        other = self._get(other_id)
                        self._put(msgspec.structs.replace(other, name="", tag=""))
                        log.info("image untagged", extra={"image": other_id, "nametag": record.nametag})
            self._put(record)

    def _put(self, record: ImageRecord) -> None:
        self._store.put(IMAGE, record.id, record, name=record.nametag if record.name else None, created=record.created)

    def tag(self, ident: str, nametag: str) -> ImageRecord:
        """Give the image `ident` the name:tag `nametag` (untagging its previous holder)."""
        record = self.find(ident)
        if record is None:
            raise NotFound(IMAGE_NOT_FOUND)
        name, tag = parse_nametag(nametag)
        updated = msgspec.structs.replace(record, name=name, tag=tag)
        self.add(updated)
        self.events.publish("image", "tag", updated.id, name=updated.nametag)
        return updated

    async def remove(self, ident: str) -> str:
        """Remove the image `ident` and the layers only it used; return its id.

        Refused while containers or child images depend on it, with upstream's messages (the
        dependents' ids, one per line). The record goes first, in one store write, then the
        layers: a layer that fails to go is reported (`Internal`) and left to the reconcile.
        """
        found = self.find(ident)
        if found is None:
            raise NotFound(f"Error: No such image: {ident}\n")
        async with self._locks.hold(("image", found.id)):
            record = self.get(found.id)
            if record is None:
                raise NotFound(f"Error: No such image: {ident}\n")
            refusal = self._refusal(record.id)
            if refusal is not None:
                raise refusal
            leaked = await self._delete(record)
        if leaked:
            raise Internal(f"deleted image but could not remove its layers: {'; '.join(leaked)}")
        return record.id

    def _refusal(self, image_id: str) -> NotFound | None:
        """The refusal to remove `image_id`, or None when nothing depends on it."""
        containers = [c.id for c in self._containers() if c.image_id == image_id]
        if containers:
            return NotFound("\n".join([f"could not remove image {image_id} since it is used for containers:",
                                       *containers]))  # fmt: skip
        children = [r.id for r in self.records() if r.parent_id == image_id]
        if children:
            return NotFound("\n".join([f"could not remove image {image_id} since it is used for images:", *children]))
        return None

    async def collect_garbage(self) -> list[str]:
        """At start-up: remove layers that no image or container stacks (a build or a creation a
        crashed daemon left half done); return their ids."""
        keep = self.referenced_layers()
        removed = []
        for layer in self._storage.list_layers():
            if layer not in keep:
                await self._storage.remove_layer(layer)
                removed.append(layer)
        if removed:
            log.warning("removed %d layers nothing used", len(removed), extra={"layers": ",".join(removed)})
        return removed

    async def _delete(self, record: ImageRecord) -> list[str]:
        """Delete the record, then its now unused layers; return what could not be removed.

        Nothing awaits between the dependency checks and the store delete, so a concurrent
        remove or build cannot slip in between.
        """
        self._store.delete(IMAGE, record.id)
        leaked = []
        for layer in dict.fromkeys(record.layers):
            if layer in self.referenced_layers():  # asked again each time: a pull may have taken it meanwhile
                continue
            try:
                await self._storage.remove_layer(layer)
            except (OSError, HostCommandError) as exc:
                log.warning("could not remove layer %s of image %s: it leaked", layer, record.id, exc_info=True)
                leaked.append(f"{layer}: {exc}")
        log.info("image removed", extra={"image": record.id})
        self.events.publish("image", "remove", record.id, name=record.nametag if record.name else None)
        return leaked

    async def prune(self, all_images: bool) -> list[str]:
        """Remove unused images; return their ids in removal order: newest first, as upstream.

        `all_images=False` (`?all=false`) removes untagged images (name and tag both "") that no container or image
        depends on; `all_images=True` every image nothing depends on. Passes repeat until one removes
        nothing, so a chain of unused images goes child first. Images used by containers, and
        their ancestors, always stay.
        """
        removed: list[str] = []
        while True:
            progress = False
            for candidate in self.records():  # newest first: children before their parents
                async with self._locks.hold(("image", candidate.id)):
                    record = self.get(candidate.id)
                    if record is None or (not all_images and (record.name or record.tag)):
                        continue
                    if self._refusal(record.id) is not None:
                        continue
                    await self._delete(record)
                removed.append(record.id)
                progress = True
            if not progress:
                return removed

    async def create(self, config: ImageCreateConfig, emit: Emit) -> ImageRecord:
        """Create a base image (see `core.image_create`); raises `CreationFailed`."""
        if self._creator is None:
            raise CreationFailed("this daemon was started without image creation support")
        record = await create_image(config, storage=self._storage, source=self._creator, add=self.add, emit=emit)
        self.events.publish("image", "create", record.id, name=record.nametag if record.name else None)
        return record
