"""What the store keeps for images and containers: the API objects plus what only the daemon
needs (layer stacks, snapshots, run state). `to_api()` gives the wire object."""

from __future__ import annotations

import msgspec

from kleene_protocol.models import Container, Image, MountPoint, PublishedPort

IMAGE = "image"
CONTAINER = "container"


class ImageRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str
    tag: str
    cmd: list[str] | None
    env: list[str]
    user: str
    instructions: list[list[str]]
    created: str
    dataset: str
    workdir: str = "/"
    entrypoint: list[str] | None = None
    exposed_ports: list[str] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    # Layer ids, bottom first. A snapshot "@<12hex>" names the first N layers of the stack.
    layers: list[str] = msgspec.field(default_factory=list)
    snapshots: dict[str, int] = msgspec.field(default_factory=dict)
    parent_id: str = ""  # the image this one was built FROM ("" for base images)

    @property
    def nametag(self) -> str:
        return f"{self.name}:{self.tag}"

    def layers_at(self, snapshot: str) -> list[str]:
        """The layer stack a container from `self@snapshot` (or `self` when "") starts from."""
        if not snapshot:
            return list(self.layers)
        return list(self.layers[: self.snapshots[snapshot]])

    def to_api(self) -> Image:
        return Image(
            id=self.id, name=self.name, tag=self.tag, cmd=self.cmd, env=self.env, user=self.user,
            instructions=self.instructions, created=self.created, dataset=self.dataset, workdir=self.workdir,
            entrypoint=self.entrypoint, exposed_ports=self.exposed_ports, labels=self.labels,
        )


class ContainerRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str | None
    image_id: str
    cmd: list[str] | None
    user: str
    env: list[str]
    jail_param: list[str]
    network_driver: str
    public_ports: list[PublishedPort]
    restart_policy: str | None
    persist: bool
    created: str
    dataset: str
    # Daemon-only state.
    layers: list[str] = msgspec.field(default_factory=list)
    workdir: str = "/"
    mounts: list[MountPoint] = msgspec.field(default_factory=list)
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None

    def to_api(self, *, running: bool) -> Container:
        return Container(
            id=self.id, name=self.name, image_id=self.image_id, cmd=self.cmd, user=self.user, env=self.env,
            jail_param=self.jail_param, network_driver=self.network_driver,  # type: ignore[arg-type]
            public_ports=self.public_ports, restart_policy=self.restart_policy,  # type: ignore[arg-type]
            persist=self.persist, created=self.created, dataset=self.dataset, running=running,
            exit_code=self.exit_code, started_at=self.started_at, finished_at=self.finished_at,
        )
