"""msgspec Structs for every object of the Kleene API.

Vocabulary: an *ident* is what a user types (id, id prefix or name); an *id* is the 12-hex
identifier the daemon assigns; a *name* is the user-chosen label.

Request Structs are decoded leniently (see `codec.decode`): unknown fields are ignored, the
strings "true"/"false" are booleans, and missing keys take the defaults below, as upstream's
OpenApiSpex layer does. Response Structs always encode every field (`null` where unset), because
upstream serialises Elixir structs and the upstream client expects every key.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NetworkDriver = Literal["ipnet", "host", "vnet", "disabled"]
RestartPolicy = Literal["no", "on-startup"]  # upstream's values: what a `Container` shows
# What a create or update may ask for: upstream's values, or (extension, docs/operations.md)
# `always`, `unless-stopped`, `on-failure[:max-retries]`; the daemon validates it.
RestartPolicySpec = Annotated[str, msgspec.Meta(
    max_length=40, description="no, on-startup, always, unless-stopped or on-failure[:max-retries]")]
MountType = Literal["volume", "nullfs"]
Protocol = Literal["tcp", "udp"]
NetworkType = Literal["bridge", "loopback", "custom"]
ImageCreateMethod = Literal["fetch", "fetch-auto", "zfs-copy", "zfs-clone", "dir"]

InterfaceName = Annotated[str, msgspec.Meta(max_length=15)]


class _Request(msgspec.Struct, kw_only=True):
    """Base of request bodies."""


class _Response(msgspec.Struct, kw_only=True):
    """Base of response bodies: every field is encoded."""


# --- isolation and resource control (extensions, docs/security.md) ----------------------------
# Every field below is optional. Absent, a container behaves as upstream's, plus kleened's two
# deliberate hardenings: the default seccomp profile and the default pids limit.

UsernsMode = Literal["", "host", "remap"]  # "": the daemon's setting (userns_remap)


class Ulimit(msgspec.Struct, kw_only=True):
    name: Literal["nofile", "nproc"]
    soft: int
    hard: int


class Resources(msgspec.Struct, kw_only=True):
    """A container's resource limits. Sizes are bytes; null is "not set" (in an update: keep).

    `memory_swap` is memory plus swap (-1: unlimited swap; unset: twice `memory`, as docker);
    `cpus` is a CPU quota over `cpu_period` microseconds (default 100000); `cpu_shares` a
    relative weight (1024 is normal); `pids_limit` -1 or 0 means no limit at all (unset: the
    daemon's default). In an update, 0 removes memory, cpus and cpu_shares, and [] the ulimits.
    """

    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    cpu_period: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = None


# --- requests ---------------------------------------------------------------------------------


class MountPointConfig(_Request):
    type: MountType = "volume"
    destination: str = ""
    source: str = ""
    read_only: bool = False


class PublishedPortConfig(_Request):
    interfaces: list[str] = msgspec.field(default_factory=list)
    host_port: str = ""
    container_port: str = ""
    protocol: Protocol = "tcp"


class HealthcheckConfig(_Request):
    """Extension: a create's healthcheck, over the image's `HEALTHCHECK` (docs/operations.md).

    `test` as in `HealthConfig` (`["NONE"]` disables the image's); a field that is null keeps the
    image's value (or the default). Durations are seconds.
    """

    test: list[str] | None = None
    interval: float | None = None
    timeout: float | None = None
    start_period: float | None = None
    start_interval: float | None = None
    retries: int | None = None


class ContainerConfig(_Request):
    name: str | None = None
    image: str | None = None
    cmd: list[str] | None = msgspec.field(default_factory=list)
    user: str | None = ""
    env: list[str] | None = msgspec.field(default_factory=list)
    mounts: list[MountPointConfig] | None = msgspec.field(default_factory=list)
    jail_param: list[str] | None = msgspec.field(default_factory=list)
    network_driver: NetworkDriver = "ipnet"
    public_ports: list[PublishedPortConfig] | None = msgspec.field(default_factory=list)
    restart_policy: RestartPolicySpec | None = "no"
    persist: bool | None = False
    # Extensions: isolation and resource control (docs/security.md). seccomp: "" (the daemon's
    # profile), "default", "unconfined" or a JSON profile.
    resources: Resources | None = None
    seccomp: str = ""
    userns: UsernsMode = ""
    # Extension: healthcheck over the image's (docs/operations.md).
    healthcheck: HealthcheckConfig | None = None


class ContainerUpdate(_Request):
    """Body of `POST /containers/{id}/update`.

    Unlike upstream (which fills defaults and so lets `klee container rename` wipe cmd and
    env), a key that is absent or null leaves the stored value unchanged; list fields that are
    present replace the stored list.
    """

    name: str | None = None
    user: str | None = None
    env: list[str] | None = None
    cmd: list[str] | None = None
    persist: bool | None = None
    restart_policy: RestartPolicySpec | None = None
    jail_param: list[str] | None = None
    # Extensions (docs/security.md): resources apply at once to a running container (ulimits
    # at its next start); seccomp and userns at its next start.
    resources: Resources | None = None
    seccomp: str | None = None
    userns: UsernsMode | None = None


class ExecConfig(_Request):
    container_id: str = ""
    cmd: list[str] = msgspec.field(default_factory=list)
    user: str = ""
    env: list[str] = msgspec.field(default_factory=list)
    tty: bool = False


class ExecStartConfig(_Request):
    """First client frame of `/exec/start`. `multiplex` (extension, opt-in): each output frame
    starts with one byte naming its stream (1 stdout, 2 stderr), as on attach; without it the
    frames carry the bare bytes upstream's client prints."""

    exec_id: str
    attach: bool
    start_container: bool
    multiplex: bool = False


class EndPointConfig(_Request):
    container: str
    network: str
    ip_address: str = ""
    ip_address6: str = ""


class RegistryCredentials(_Request):
    """Extension: what a registry accepts for basic auth, or to obtain a bearer token."""

    username: str = ""
    password: str = ""


class ImagePullConfig(_Request):
    """Extension: first frame of the `/images/pull` WebSocket (docs/images.md).

    `reference`: `[registry/]repository[:tag][@sha256:...]`; short names resolve as Docker's do
    (`busybox` is `docker.io/library/busybox:latest` with the default registry).
    `platform`: `os/arch[/variant]` to pick from a multi-platform index ("" is the host's).
    `credentials`: registry host (`docker.io`, `host:port`) -> credentials; the entry of the
    registry the reference resolves to is used instead of the daemon's auth file.
    """

    reference: str
    platform: str = ""
    credentials: dict[str, RegistryCredentials] = msgspec.field(default_factory=dict)


class ImagePushConfig(_Request):
    """Extension: first frame of the `/images/push` WebSocket. `reference` defaults to the image's name:tag."""

    image: str
    reference: str = ""
    credentials: dict[str, RegistryCredentials] = msgspec.field(default_factory=dict)


class ImageSaveConfig(_Request):
    """Extension: first frame of the `/images/save` WebSocket: the images go into one OCI archive."""

    images: list[str]


class ImageLoadConfig(_Request):
    """Extension: first frame of the `/images/load` WebSocket; the archive follows in BINARY frames."""

    tag: str = ""  # name:tag for an archive image that has none


class RegistryLogin(_Request):
    """Extension: body of `POST /images/registry/login`: check credentials against a registry."""

    registry: str
    username: str
    password: str


class ImageBuildConfig(_Request):
    context: str
    container_config: ContainerConfig
    dockerfile: str = "Dockerfile"
    quiet: bool = False
    cleanup: bool = True
    tag: str = ""
    buildargs: dict[str, str] = msgspec.field(default_factory=dict)
    networks: list[EndPointConfig] = msgspec.field(default_factory=list)
    # Extensions (absent from upstream klee's frames, so upstream behaviour by default):
    # reuse the layers of unchanged steps (a "--> Using cache" line announces each hit);
    cache: bool = False
    # the context arrives over the WebSocket as a tar stream after this frame (see docs/build.md),
    # instead of being read from the daemon host's `context` path.
    context_upload: bool = False
    # a FROM naming an image that is not local is pulled from its registry (docs/images.md);
    # without it (upstream klee) such a FROM fails with upstream's "could not find image".
    pull: bool = False
    # registry host -> credentials for those pulls (the daemon's own auth file is used too).
    credentials: dict[str, RegistryCredentials] = msgspec.field(default_factory=dict)
    # the stage to build (`--target`; "" is the last one): only the stages it needs run;
    target: str = ""
    # the platform to build for (`--platform`); only the host's is accepted ("" is the host's);
    platform: str = ""
    # labels set on the image, over the Dockerfile's (`--label`);
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    # secrets for `RUN --mount=type=secret,id=<id>` (`--secret`): id -> content, base64 in JSON. Never stored,
    # logged, put in a layer or a cache key.
    secrets: dict[str, bytes] = msgspec.field(default_factory=dict)


class ImageCreateConfig(_Request):
    method: ImageCreateMethod
    tag: str = ""
    dns: bool = True
    localtime: bool = True
    update: bool = False
    zfs_dataset: str = ""
    url: str = ""
    autotag: bool = False
    # Extension (method "dir"): a directory on the daemon host copied into the new image.
    path: str = ""


class NetworkConfig(_Request):
    name: str
    type: NetworkType
    interface: InterfaceName = ""
    subnet: str = ""
    subnet6: str = ""
    gateway: str = ""
    gateway6: str = ""
    nat: str = "<host-gateway>"
    icc: bool = True
    internal: bool = False


class VolumeConfig(_Request):
    name: str


# --- responses --------------------------------------------------------------------------------


class IdResponse(_Response):
    id: str


class ErrorResponse(_Response):
    message: str


class PublishedPort(_Response):
    interfaces: list[str]
    host_port: str
    container_port: str
    protocol: Protocol
    ip_address: str = ""
    ip_address6: str = ""


class HealthConfig(_Response):
    """A container's healthcheck (Dockerfile `HEALTHCHECK`, or given at create).

    `test`: `["CMD", arg...]` (run as is), `["CMD-SHELL", command]` (run by the image's shell) or
    `["NONE"]` (disable the image's check). Durations are seconds.
    """

    test: list[str] = msgspec.field(default_factory=list)
    interval: float = 30.0
    timeout: float = 30.0
    start_period: float = 0.0
    start_interval: float = 5.0
    retries: int = 3


HealthStatus = Literal["starting", "healthy", "unhealthy"]


class HealthResult(_Response):
    """One probe: when it ran (RFC 3339), its exit code (-1: it timed out or could not run) and the
    start of its output (at most 4096 bytes)."""

    start: str
    end: str
    exit_code: int
    output: str


class Health(_Response):
    """Extension: a container's health while its healthcheck runs (docs/operations.md).
    `failing_streak`: consecutive failed probes; `log`: the last 5 probes, oldest first."""

    status: HealthStatus
    failing_streak: int = 0
    log: list[HealthResult] = msgspec.field(default_factory=list)


class Container(_Response):
    id: str
    name: str | None
    image_id: str
    cmd: list[str] | None
    user: str
    env: list[str]
    jail_param: list[str]
    network_driver: NetworkDriver
    public_ports: list[PublishedPort]
    restart_policy: RestartPolicy | None
    persist: bool
    created: str
    dataset: str
    running: bool = False
    # Extensions: what upstream cannot tell (last exit code, start and finish times).
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # Extensions: isolation and resource control (docs/security.md). In inspect, `resources`
    # holds the limits in force (daemon defaults included); `oom_killed`: the kernel killed a
    # process of the last run for lack of memory.
    resources: Resources = msgspec.field(default_factory=Resources)
    seccomp: str = ""
    userns: UsernsMode = ""
    oom_killed: bool = False
    # Extensions: restart policies (docs/operations.md). `restart_policy` shows upstream's value
    # closest to the policy (`on-startup` for always/unless-stopped, else `no`); `restart` is the
    # policy as given; `restart_count` the automatic restarts since a user last started it;
    # `restarting`: it exited and waits out its back-off before the next start. While a restarted
    # container runs, `exit_code`, `finished_at` and `oom_killed` are those of the exit that restarted it.
    restart: str = ""
    restart_count: int = 0
    restarting: bool = False
    # Extensions: the healthcheck in force (the image's with the create's over it; null: none) and
    # the health it reports (null before the first start; the last run's after it stopped).
    healthcheck: HealthConfig | None = None
    health: Health | None = None


class ContainerSummary(Container):
    image_name: str = ""
    image_tag: str = ""
    jid: int | None = None


class EndPoint(_Response):
    id: str
    network_id: str
    container_id: str
    epair: str | None = None
    ip_address: str = ""
    ip_address6: str = ""


class MountPoint(_Response):
    type: MountType
    container_id: str
    destination: str
    source: str
    read_only: bool = False


class ContainerInspect(_Response):
    container: Container
    container_endpoints: list[EndPoint]
    container_mountpoints: list[MountPoint]


class Image(_Response):
    id: str
    name: str
    tag: str
    cmd: list[str] | None
    env: list[str]
    user: str
    instructions: list[list[str]]
    created: str
    dataset: str
    # Extensions (set by builds that use ENTRYPOINT, EXPOSE, LABEL, WORKDIR).
    workdir: str = "/"
    entrypoint: list[str] | None = None
    exposed_ports: list[str] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    # Extensions from Dockerfile instructions and OCI image configs: VOLUME paths, STOPSIGNAL
    # (a name like "SIGQUIT" or a number; "" is SIGTERM), SHELL (empty: ["/bin/sh", "-c"]),
    # HEALTHCHECK, ONBUILD triggers (instruction lines, run when a build starts FROM the image).
    volumes: list[str] = msgspec.field(default_factory=list)
    stop_signal: str = ""
    shell: list[str] = msgspec.field(default_factory=list)
    healthcheck: HealthConfig | None = None
    onbuild: list[str] = msgspec.field(default_factory=list)
    # Extensions for images from registries and archives: the reference it was pulled from
    # (`docker.io/library/busybox:latest`), its manifest digest there, and its platform.
    source: str = ""
    digest: str = ""
    os: str = ""
    architecture: str = ""


class PullProgress(msgspec.Struct, kw_only=True, frozen=True):
    """Extension: a TEXT frame of `/images/pull` and `/images/push`, one per layer state change.

    `layer`: the blob's short digest (12 hex); `status`: `Waiting`, `Downloading`, `Extracting`,
    `Already exists`, `Pull complete`, `Pushing`, `Mounted`, `Layer already exists`,
    `Pushed`; `current`/`total` are bytes ("total" 0 when unknown).
    """

    type: Literal["progress"] = "progress"
    layer: str
    status: str
    current: int = 0
    total: int = 0


class BuildPrune(_Response):
    """Extension: `POST /build/prune` removed these RUN cache mounts (`RUN --mount=type=cache` ids, oldest
    first) and the bytes their files took."""

    cache_mounts: list[str]
    bytes_reclaimed: int


class Network(_Response):
    id: str
    name: str
    type: NetworkType
    interface: str
    subnet: str
    subnet6: str
    gateway: str
    gateway6: str
    nat: str
    icc: bool
    internal: bool


class NetworkInspect(_Response):
    network: Network
    network_endpoints: list[EndPoint]


class Volume(_Response):
    name: str
    dataset: str
    mountpoint: str
    created: str


class VolumeInspect(_Response):
    volume: Volume
    mountpoints: list[MountPoint]


class RuntimeVersion(_Response):
    name: str
    version: str


class Version(_Response):
    """Extension: `GET /version`."""

    version: str
    api_version: str
    platform: str
    python: str
    runtimes: list[RuntimeVersion]


# --- streams: attach, logs, events (extensions) ----------------------------------------------

EventType = Literal["container", "exec", "image", "network", "volume"]
TimeSpec = float | str  # unix seconds (1700000000.5), or RFC 3339 ("2024-05-01T12:00:00Z"); "" is unset


class AttachConfig(_Request):
    """First client frame of the `/containers/{id}/attach` WebSocket.

    `logs`: how many of the latest output lines of the current run come before live output.
    `detach_keys`: docker's syntax (`ctrl-p,ctrl-q`, `ctrl-x`, `a,b`); "" takes the daemon's
    default. `multiplex`: each output frame starts with one byte naming its stream (1 stdout,
    2 stderr); without it frames carry the bare bytes, as `/exec/start` does.
    """

    logs: int = 0
    stdin: bool = True
    detach_keys: str = ""
    multiplex: bool = False


class LogsConfig(_Request):
    """First client frame of the `/containers/{id}/logs` WebSocket.

    `tail`: the number of lines to start from the end (null: the whole log). `since` and
    `until` bound the entries by time. Output frames always start with the stream byte.
    """

    follow: bool = False
    tail: int | None = None
    since: TimeSpec = ""
    until: TimeSpec = ""
    timestamps: bool = False
    stdout: bool = True
    stderr: bool = True


class EventsConfig(_Request):
    """First client frame of the `/events` WebSocket.

    `filters`: key -> accepted values; keys are `type`, `event` (the action) and `object` (an
    id or name, which also matches the `container` attribute). Values of one key are
    alternatives; different keys must all match. `since` replays the retained history.
    """

    since: TimeSpec = ""
    until: TimeSpec = ""
    filters: dict[str, list[str]] = msgspec.field(default_factory=dict)


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """One state change, as `/events` sends it (a TEXT frame each).

    `seq` counts events since the daemon started; `time` is RFC 3339 with nanoseconds, UTC.
    `id` is the object's id (a volume's name). `attributes` carry what the action needs
    (`name`, `exit_code`, `container`, ...).
    """

    seq: int
    time: str
    time_nano: int
    type: EventType
    action: str
    id: str
    attributes: dict[str, str] = msgspec.field(default_factory=dict)


# --- stats and top (extensions, docs/security.md) ------------------------------------------------


class StatsConfig(_Request):
    """First client frame of the `/containers/stats` WebSocket.

    `containers`: idents to sample (empty: every running container, also those started later);
    `interval`: seconds between samples; `stream` false: one sample, then the stream ends.
    """

    containers: list[str] = msgspec.field(default_factory=list)
    interval: Annotated[float, msgspec.Meta(ge=0.1, le=60)] = 1.0
    stream: bool = True


class ContainerStats(msgspec.Struct, kw_only=True):
    """One container in one sample. `cpu_percent`: CPU time over wall time since the previous
    sample (100 is one whole CPU). Memory excludes page cache the kernel can drop. Network
    counters are null for a container on the host's network stack; limits are null when unset."""

    id: str
    name: str | None
    cpu_percent: float
    memory: int
    memory_limit: int | None
    pids: int
    pids_limit: int | None
    net_rx: int | None
    net_tx: int | None
    block_read: int
    block_write: int


class StatsSample(msgspec.Struct, kw_only=True):
    """One TEXT frame of `/containers/stats`: every sampled container at `time` (RFC 3339)."""

    time: str
    containers: list[ContainerStats]


class ContainerProcess(_Response):
    """One process of a container. `uid` as the container sees it (`host_uid` on the host:
    they differ in a user namespace); `cpu_time` in seconds; `rss` in bytes."""

    pid: int
    ppid: int
    uid: int
    host_uid: int
    user: str
    state: str
    cpu_time: float
    rss: int
    started: str
    command: str


class ContainerTop(_Response):
    id: str
    processes: list[ContainerProcess]
