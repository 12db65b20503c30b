"""The OCI image service: pull, push, save, load and registry logins, on top of `Images`.

Images from registries and archives are ordinary images here: a layer stack plus the image
config's Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Labels, Volumes, StopSignal,
Healthcheck, Shell and OnBuild. They are named by their *familiar name* (`reference`), so
`busybox` pulled from Docker Hub is the local `busybox:latest` that `klee run busybox` finds.
Layers are shared by diff id (`layers`).

Credentials for a registry come, in order, from the request, then the daemon's credentials file
(`registry_auth_file`, the format of `kleene_protocol.auth`), else none (anonymous).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kleene_protocol import auth as authfile
from kleene_protocol.ids import new_id
from kleene_protocol.models import (
    ImageBuildConfig,
    ImageLoadConfig,
    ImagePullConfig,
    ImagePushConfig,
    ImageSaveConfig,
    RegistryCredentials,
    RegistryLogin,
)

from ...platform.base import HostCommandError, LayerStorage, TransportError
from ..clock import now_iso
from ..image_create import Emit, failure_reason
from ..images import Images, parse_nametag
from ..records import ImageRecord
from ..store import Store
from .archive import Loaded, Send, load, save
from .interfaces import ArchiveFiles, Chunks, HttpTransport, LayerFiles, Progress
from .layers import LayerIndex
from .manifest import ManifestError, image_fields, parse_platform
from .pull import PullJob, pull, resolve
from .push import PushJob, push
from .reference import Reference, ReferenceError_, normalise_registry, parse
from .registry import Credentials, RegistryClient, RegistryError
from .unpack import LayerMaker

log = logging.getLogger(__name__)

FAILURES = (RegistryError, ManifestError, ReferenceError_, ValueError, TransportError, OSError, HostCommandError)


class OciFailed(Exception):
    """A pull, push, save or load failed for `reason` (for the client); nothing was left behind."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RegistrySettings:
    default_registry: str = "docker.io"
    insecure: frozenset[str] = field(default_factory=frozenset)  # host[:port] spoken to over plain HTTP
    auth_file: Path | None = None
    concurrency: int = 3  # layers transferred at once per pull or push
    retries: int = 3


class OciImages:
    def __init__(self, *, store: Store, images: Images, storage: LayerStorage, transport: HttpTransport,
                 files: LayerFiles, archives: ArchiveFiles, settings: RegistrySettings | None = None) -> None:
        self.images = images
        self.storage = storage
        self.transport = transport
        self.files = files
        self.archives = archives
        self.settings = settings or RegistrySettings()
        self.index = LayerIndex(store, lambda layer: storage.layer_path(layer).is_dir())

    # --- references and clients ---------------------------------------------------------------

    def reference(self, text: str) -> Reference:
        try:
            return parse(text, self.settings.default_registry)
        except ReferenceError_ as exc:
            raise OciFailed(str(exc)) from None

    def familiar(self, ref: Reference) -> tuple[str, str]:
        return ref.familiar(self._default_registry)

    def client(self, registry: str, given: dict[str, RegistryCredentials] | None = None) -> RegistryClient:
        """A client for `registry`: https unless the config lists it as insecure."""
        scheme = "http" if registry in self.settings.insecure else "https"
        endpoint = Reference(registry, "x").endpoint
        return RegistryClient(self.transport, f"{scheme}://{endpoint}", self._credentials(registry, given),
                              retries=self.settings.retries)

    def _credentials(self, registry: str, given: dict[str, RegistryCredentials] | None) -> Credentials | None:
        """The request's credentials for `registry`, else the daemon's auth file's, else None."""
        entry = next((c for key, c in (given or {}).items() if authfile.registry_key(key) == registry), None)
        if entry is not None and entry.username:
            return Credentials(entry.username, entry.password)
        path = self.settings.auth_file
        if path is None or not path.is_file():
            return None
        try:
            found = authfile.lookup(authfile.decode(path.read_bytes()), registry)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the registry credentials file %s: %s", path, exc)
            return None
        return Credentials(*found) if found else None

    # --- pull ---------------------------------------------------------------------------------

    async def pull(self, config: ImagePullConfig, progress: Progress) -> ImageRecord:
        """Pull `config.reference`; raises `OciFailed`."""
        return await self.pull_reference(config.reference, progress, platform=config.platform,
                                         credentials=config.credentials)

    async def pull_reference(self, text: str, progress: Progress, *, platform: str = "",
                             credentials: dict[str, RegistryCredentials] | None = None) -> ImageRecord:
        ref = self.reference(text)
        try:
            return await self._pull(ref, progress, platform, self.client(ref.registry, credentials))
        except FAILURES as exc:
            raise OciFailed(failure_reason(exc)) from exc

    async def _pull(self, ref: Reference, progress: Progress, platform: str, client: RegistryClient) -> ImageRecord:
        manifest, digest, chosen = await resolve(client, ref, parse_platform(platform))
        name, tag = self.familiar(ref)
        if not ref.tag:
            tag = ""
        current = self.images.find(f"{name}:{tag}") if ref.tag else None
        if current is not None and (current.digest, current.manifest_digest) == (digest, chosen):
            log.info("image up to date", extra={"image": current.id, "reference": str(ref)})
            return current
        with self.images.pins.holding() as pin:
            job = PullJob(client=client, reference=ref, maker=self._maker(pin), progress=progress,
                          concurrency=self.settings.concurrency, retries=self.settings.retries)
            pulled = await pull(job, manifest, digest)
            layers = pulled.layers
            source = f"{ref.registry}/{ref.repository}" + (f":{ref.tag}" if ref.tag else "")
            record = ImageRecord(
                id=new_id(), name=name, tag=tag, instructions=[], created=now_iso(),
                dataset=str(self.storage.layer_path(layers[-1])) if layers else "", layers=layers,
                source=source, digest=pulled.digest, manifest_digest=chosen, **image_fields(pulled.config),
            )
            self.images.add(record)
        log.info("image pulled", extra={"image": record.id, "reference": str(ref), "digest": digest,
                                        "bytes": pulled.downloaded})
        self.images.events.publish("image", "pull", record.id, name=record.nametag if record.name else None)
        return record

    async def pull_for_build(self, text: str, config: ImageBuildConfig, emit: Emit) -> ImageRecord:
        """The builder's hook for a FROM image that is not local: pull it, one text line per layer change."""
        seen: dict[str, str] = {}

        async def progress(layer: str, status: str, _current: int, _total: int) -> None:
            if seen.get(layer) != status:
                seen[layer] = status
                await emit(f"{layer}: {status}\n")

        await emit(f"Pulling {text}\n")
        try:
            record = await self.pull_reference(text, progress, credentials=config.credentials)
        except OciFailed as exc:
            raise ValueError(exc.reason) from None
        await emit(f"Pulled {record.source or text} ({record.digest}) as image {record.id}\n")
        return record

    # --- push ---------------------------------------------------------------------------------

    async def push(self, config: ImagePushConfig, progress: Progress) -> str:
        """Push `config.image` to `config.reference` (default: its name:tag); return the manifest digest."""
        record = self.images.find(config.image)
        if record is None:
            raise OciFailed(f"no such image '{config.image}'")
        if not config.reference and not record.name:
            raise OciFailed(f"image {record.id} has no name: give the reference to push to")
        ref = self.reference(config.reference or record.nametag)
        if ref.digest:
            raise OciFailed(f"cannot push to a digest reference '{ref}': give a tag")
        with self.images.pins.holding() as pin:
            for layer in record.layers:
                pin(layer)
            job = PushJob(client=self.client(ref.registry, config.credentials), reference=ref, image=record,
                          index=self.index, files=self.files, layer_path=self.storage.layer_path, progress=progress,
                          concurrency=self.settings.concurrency)
            try:
                digest = await push(job)
            except FAILURES as exc:
                raise OciFailed(failure_reason(exc)) from exc
        log.info("image pushed", extra={"image": record.id, "reference": str(ref), "digest": digest})
        self.images.events.publish("image", "push", record.id, name=str(ref))
        return digest

    def _maker(self, pin: Callable[[str], None]) -> LayerMaker:
        return LayerMaker(storage=self.storage, files=self.files, index=self.index, pin=pin)

    # --- archives -------------------------------------------------------------------------------

    async def save(self, config: ImageSaveConfig, send: Send) -> None:
        """Write the images of `config` as one OCI layout tar to `send`."""
        records = []
        for ident in config.images:
            record = self.images.find(ident)
            if record is None:
                raise OciFailed(f"no such image '{ident}'")
            records.append(record)
        with self.images.pins.holding() as pin:
            for layer in {layer for record in records for layer in record.layers}:
                pin(layer)
            try:
                await save(records, index=self.index, files=self.files, layer_path=self.storage.layer_path,
                           send=send, default_registry=self._default_registry)
            except FAILURES as exc:
                raise OciFailed(failure_reason(exc)) from exc

    async def load(self, config: ImageLoadConfig, chunks: Chunks, emit: Emit) -> list[ImageRecord]:
        """Load every image of the archive `chunks` carry; nothing is kept when it fails."""
        with self.images.pins.holding() as pin:
            maker = self._maker(pin)
            try:
                async with self.archives.spooled(chunks) as archive:
                    loaded = await load(archive, maker, emit, self._default_registry)
            except FAILURES as exc:
                await maker.discard_all()
                raise OciFailed(failure_reason(exc)) from exc
            except BaseException:
                await maker.discard_all()
                raise
            records = [self._loaded_record(item, config, len(loaded)) for item in loaded]
            for record in records:
                self.images.add(record)
        for record in records:
            self.images.events.publish("image", "load", record.id, name=record.nametag if record.name else None)
            await emit(f"Loaded image: {record.nametag if record.name else '<untagged>'} ({record.id})\n")
        return records

    def _loaded_record(self, item: Loaded, config: ImageLoadConfig, count: int) -> ImageRecord:
        name, tag = item.name, item.tag
        if not name and config.tag and count == 1:
            name, tag = parse_nametag(config.tag)
        layers = item.layers
        return ImageRecord(
            id=new_id(), name=name, tag=tag, instructions=[], created=now_iso(),
            dataset=str(self.storage.layer_path(layers[-1])) if layers else "", layers=layers,
            digest=item.digest, **image_fields(item.config),
        )

    @property
    def _default_registry(self) -> str:
        return normalise_registry(self.settings.default_registry)

    # --- registry logins ------------------------------------------------------------------------

    async def login(self, request: RegistryLogin) -> str:
        """Check `request`'s credentials against its registry's API root; return the registry."""
        registry = normalise_registry(request.registry or self.settings.default_registry)
        client = self.client(registry, {registry: RegistryCredentials(username=request.username,
                                                                      password=request.password)})
        try:
            await client.check()
        except FAILURES as exc:
            raise OciFailed(failure_reason(exc)) from exc
        return registry

    def reconcile(self) -> list[str]:
        """At start-up, after the layer garbage collection: drop the records of layers that are gone.
        (Spool files of interrupted loads live in the work directory, which the start-up clears.)"""
        return self.index.reconcile()
