"""What the store keeps for images and containers: the API objects plus what only the daemon
needs (layer stacks, snapshots, run state). `to_api()` gives the wire object."""

from __future__ import annotations

import msgspec

from kleene_protocol.models import Container, Image, MountPoint

IMAGE = "image"
CONTAINER = "container"


class ImageRecord(Image, kw_only=True):
    """An `Image` plus its layer stack."""

    # Layer ids, bottom first. A snapshot "@<12hex>" names the first N layers of the stack.
    layers: list[str] = msgspec.field(default_factory=list)
    snapshots: dict[str, int] = msgspec.field(default_factory=dict)
    parent_id: str = ""  # the image this one was built FROM ("" for base images)
    manifest_digest: str = ""  # pulled images: the manifest chosen (from an index, for the platform)

    @property
    def nametag(self) -> str:
        return f"{self.name}:{self.tag}"

    def layers_at(self, snapshot: str) -> list[str]:
        """The layer stack a container from `self@snapshot` (or `self` when "") starts from."""
        if not snapshot:
            return list(self.layers)
        return list(self.layers[: self.snapshots[snapshot]])

    def to_api(self) -> Image:
        return Image(**{name: getattr(self, name) for name in Image.__struct_fields__})


class ContainerRecord(Container, kw_only=True):
    """A `Container` plus daemon-only state. `running` is never stored: the supervisor knows it."""

    layers: list[str] = msgspec.field(default_factory=list)
    workdir: str = "/"
    mounts: list[MountPoint] = msgspec.field(default_factory=list)
    stopped_by_user: bool = False  # a user's stop ended its last run (`unless-stopped` stays stopped)
    committing: str | None = None  # the layer a `commit` is making of the writable layer (see commit_fs)

    def to_api(self, *, running: bool) -> Container:
        fields = {name: getattr(self, name) for name in Container.__struct_fields__}
        return Container(**{**fields, "running": running})
