"""System-wide views and cleanup: `system info`, `system df`, `system prune`.

Counts and sizes are read at one moment, not under any lock: they describe the daemon as it
was while they were read (a container created meanwhile may be missing). Sizes are file
content (`DiskSizes`), each layer counted once however many images and containers stack it;
an image's `unique_size` is the bytes of its layers no other image stacks (Docker's), which
removing it frees once no container stacks them either.

`prune` runs the four prunes one after the other, each with its own locks and rules (stopped
containers without `persist`; networks without endpoints; dangling images, or every unused one
with `all`; with `volumes`, volumes no container mounts), so it removes exactly what the
separate prune commands would, in the same order. `space_reclaimed` is the drop in the bytes
of layers, containers' writable layers and volumes across the prune.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from kleene_protocol.models import Version
from kleene_protocol.operations import (
    ContainerUsage,
    DiskUsage,
    ImageUsage,
    Listener,
    SystemInfo,
    SystemPruneConfig,
    SystemPruneResult,
    VolumeUsage,
)

from ..platform.base import DiskSizes, HostFacts
from .containers import Containers
from .images import Images
from .networks import Networks
from .records import CONTAINER, ContainerRecord, ImageRecord
from .store import Store
from .volumes import Volumes


@dataclass
class _Sizes:
    layers: dict[str, int]
    containers: dict[str, int]
    volumes: dict[str, int]
    build_cache: int = 0

    @property
    def total(self) -> int:
        return sum(self.layers.values()) + sum(self.containers.values()) + sum(self.volumes.values())


class System:
    def __init__(self, store: Store, containers: Containers, images: Images, volumes: Volumes, networks: Networks,
                 *, version: Version, facts: HostFacts, sizes: DiskSizes, state_root: str,
                 listeners: list[Listener]) -> None:
        self._store = store
        self._containers = containers
        self._images = images
        self._volumes = volumes
        self._networks = networks
        self._version = version
        self._facts = facts
        self._sizes = sizes
        self._state_root = state_root
        self._listeners = listeners

    def _container_records(self) -> list[ContainerRecord]:
        return self._store.all(CONTAINER, ContainerRecord)

    def info(self) -> SystemInfo:
        records = self._container_records()
        running = sum(1 for r in records if self._containers.is_running(r.id))
        runtime = self._version.runtimes[0] if self._version.runtimes else None
        return SystemInfo(
            version=self._version.version, api_version=self._version.api_version,
            backend=runtime.name if runtime else "", runtime_version=runtime.version if runtime else "",
            storage_driver=self._facts.storage_driver, kernel=self._facts.kernel, os=self._facts.os,
            cgroup_mode=self._facts.cgroup_mode, state_root=self._state_root, listeners=list(self._listeners),
            containers=len(records), containers_running=running, containers_stopped=len(records) - running,
            images=len(self._images.records()), volumes=len(self._volumes.list()), networks=len(self._networks.list()),
        )

    async def _measure(self, images: list[ImageRecord], containers: list[ContainerRecord]) -> _Sizes:
        layers = {layer for record in [*images, *containers] for layer in record.layers}
        names = [v.name for v in self._volumes.list()]
        ids = [c.id for c in containers]

        def measure() -> _Sizes:
            return _Sizes(layers={layer: self._sizes.layer(layer) for layer in layers},
                          containers={cid: self._sizes.container(cid) for cid in ids},
                          volumes={name: self._sizes.volume(name) for name in names},
                          build_cache=self._sizes.build_cache())

        return await trio.to_thread.run_sync(measure)

    async def df(self) -> DiskUsage:
        images = self._images.records()
        containers = self._container_records()
        sizes = await self._measure(images, containers)
        users: dict[str, set[str]] = {}  # layer -> the images that stack it (as Docker's shared size)
        for image in images:
            for layer in image.layers:
                users.setdefault(layer, set()).add(image.id)
        in_use = self._containers.images_in_use()
        image_rows = [
            ImageUsage(id=r.id, name=r.name, tag=r.tag, size=sum(sizes.layers[layer] for layer in set(r.layers)),
                       unique_size=sum(sizes.layers[layer] for layer in set(r.layers) if users[layer] == {r.id}),
                       containers=len(in_use.get(r.id, [])))
            for r in images
        ]
        container_rows = [
            ContainerUsage(id=r.id, name=r.name or "", image_id=r.image_id, size=sizes.containers[r.id],
                           running=self._containers.is_running(r.id))
            for r in containers
        ]
        volume_rows = [VolumeUsage(name=name, size=size, containers=len(self._volumes.mountpoints(name)))
                       for name, size in sizes.volumes.items()]
        return DiskUsage(
            images=image_rows, containers=container_rows, volumes=volume_rows,
            layers_size=sum(sizes.layers.values()), build_cache_size=sizes.build_cache,
            reclaimable_images=sum(i.unique_size for i in image_rows if i.containers == 0),
            reclaimable_containers=sum(c.size for c, r in zip(container_rows, containers, strict=True)
                                       if not c.running and not r.persist),
            reclaimable_volumes=sum(v.size for v in volume_rows if v.containers == 0),
        )

    async def prune(self, config: SystemPruneConfig) -> SystemPruneResult:
        before = await self._measure(self._images.records(), self._container_records())
        containers = await self._containers.prune()
        networks = await self._networks.prune()
        images = await self._images.prune(config.all)
        volumes = await self._volumes.prune() if config.volumes else []
        after = await self._measure(self._images.records(), self._container_records())
        return SystemPruneResult(containers=containers, networks=networks, images=images, volumes=volumes,
                                 space_reclaimed=max(0, before.total - after.total))
