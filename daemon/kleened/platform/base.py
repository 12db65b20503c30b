"""The interfaces between core and the host drivers.

Vocabulary:
- a *layer* is a read-only filesystem delta, named by a 12-hex id; an image is an ordered
  stack of layers (bottom first) and each build snapshot names a prefix of that stack;
- a *container filesystem* is the stack of its image's layers up to the chosen snapshot plus
  the container's own writable layer; it is mounted while the container runs;
- a *volume* is a directory the daemon owns, bind-mounted into containers;
- a *sandbox* is where a running container's network stack lives: a named netns on Linux, the
  container's vnet jail on FreeBSD; core only passes it between the network driver and the
  runtime, never looks inside.

One module holds every interface core uses, each neutral enough for both backends (docs/freebsd.md
"Design note"); a driver offers what it can and says what it cannot with `capabilities` or a
`ValueError`, never by core checking a driver's name.

Drivers raise `HostCommandError` when a host command fails; core translates it.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import trio

from kleene_protocol.models import Network, PublishedPort
from kleene_protocol.operations import PathStat

Emit = Callable[[str], Awaitable[None]]
Count = Callable[[int], Awaitable[None]]


class HostCommandError(Exception):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{self.argv[0]} exited with {returncode}: {self.stderr}")


class TransportError(OSError):
    """A registry could not be reached, or the connection broke mid-transfer.

    `transient` says whether trying again may help (a reset or a timeout may; a certificate
    that does not verify will not).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Unpacked:
    """An OCI layer extracted into a layer directory."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    entries: int
    bytes: int


@dataclass(frozen=True)
class Packed:
    """A layer directory as an OCI layer blob (see `LayerFiles.measure`)."""

    digest: str  # of the blob's bytes, compressed as asked
    size: int
    diff_id: str  # of the uncompressed tar


# --- container files (cp) ------------------------------------------------------------------------


class PathError(ValueError):
    """A container path that cannot be copied: `kind` is `missing` (nothing there), `invalid`
    (not a directory, a hostile or broken archive, over a limit) or `failed` (the copy broke)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class CopyLimits:
    """Caps on one upload into a container."""

    max_bytes: int
    max_entries: int


class ContainerFiles(Protocol):
    """Paths of a mounted container root (`root`, a host path) as the container sees them, read
    and written as uncompressed tar streams; symlinks resolve inside `root` even when the
    container changes them meanwhile. Raises `PathError`."""

    async def stat(self, root: Path, path: str, follow: bool = False) -> PathStat:
        """What is at `path`; `follow`: what a link there points to (also when `path` ends with `/`)."""
        ...

    def read(self, root: Path, path: str, follow: bool = False
             ) -> AbstractAsyncContextManager[tuple[PathStat, AsyncIterator[bytes]]]:
        """`path`'s stat, and its tar stream (the top entry named after its last component)."""
        ...

    async def write(self, root: Path, path: str, chunks: AsyncIterator[bytes], limits: CopyLimits) -> tuple[int, int]:
        """Extract the tar `chunks` into the existing directory `path`; return (entries, bytes)."""
        ...


# --- system views ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What `system info` says about the host and the drivers."""

    os: str
    kernel: str
    storage_driver: str
    cgroup_mode: str  # "v2", "hybrid", "v1" or "none"


class DiskSizes(Protocol):
    """Bytes of file content of the storage's objects; blocking (run them in a worker thread)."""

    def layer(self, layer_id: str) -> int: ...
    def container(self, container_id: str) -> int:
        """The container's own writable layer."""
        ...
    def volume(self, name: str) -> int: ...
    def build_cache(self) -> int: ...


# --- storage ----------------------------------------------------------------------------------


class VolumeStorage(Protocol):
    def volume_path(self, name: str) -> Path: ...
    def dataset(self, name: str) -> str:
        """What `Volume.dataset` shows (a ZFS dataset upstream, a directory on overlay)."""
        ...
    async def create_volume(self, name: str) -> Path: ...
    async def remove_volume(self, name: str) -> None: ...
    async def list_volumes(self) -> list[str]:
        """Every volume's name (async: ZFS lists its datasets)."""
        ...
    async def populate_volume(self, name: str, source: Path) -> None:
        """Copy `source` (a directory in a container's mounted filesystem) into the volume."""
        ...


class Capability(enum.Flag):
    """What a storage driver can do beyond the common layer/volume operations."""

    NONE = 0
    CLONE_AT_CREATE = enum.auto()  # a container filesystem exists (and is mounted) from create on (ZFS clones)
    SNAPSHOT = enum.auto()  # build steps are snapshots of the container, not new layers
    SEND = enum.auto()  # datasets can be copied or cloned in (image creation by zfs-copy / zfs-clone)


class LayerStorage(Protocol):
    driver: str  # "overlay", "zfs": shown to users, never compared by core
    capabilities: Capability

    def container_dataset(self, container_id: str) -> str:
        """What `Container.dataset` shows: a ZFS dataset upstream, a directory on overlay."""
        ...

    def layer_path(self, layer_id: str) -> Path: ...
    async def create_layer(self) -> tuple[str, Path]:
        """A new empty layer to fill (extract a base image into it). Not yet usable by others."""
        ...
    async def seal_layer(self, layer_id: str) -> None:
        """The layer `create_layer` gave is filled: make it usable (ZFS: the `@image` snapshot
        containers clone; overlay: nothing to do)."""
        ...
    async def remove_layer(self, layer_id: str) -> None: ...
    def list_layers(self) -> list[str]: ...

    async def create_container_fs(self, container_id: str, layers: Sequence[str] = ()) -> None:
        """The container's own filesystem. Without `CLONE_AT_CREATE` an empty writable layer
        (`layers` are composed at mount); with it a clone of the top of `layers` (ZFS)."""
        ...
    async def mount_container_fs(self, container_id: str, layers: Sequence[str],
                                 userns: UserNamespace | None = None) -> Path:
        """Mount `layers` (bottom first) under the container's layer; return the rootfs path.

        With `userns` the files' owners appear shifted into that range (root's files belong to
        `uid_base`), while on disk they stay as in any other container.
        """
        ...
    async def unmount_container_fs(self, container_id: str) -> None: ...
    async def remove_container_fs(self, container_id: str) -> None: ...
    async def commit_container_fs(self, container_id: str, layer_id: str) -> str:
        """Turn the (unmounted) container layer into the new read-only layer `layer_id` (the
        caller names it, so it can record the name before the layer exists); return its id.

        The container gets a fresh empty writable layer on top of the new one. Killed midway,
        the next `cleanup` leaves the container with a writable layer again, and the new layer
        exists or not: the caller's record of the name decides which (`Containers.reconcile`).
        """
        ...
    async def finish_build(self, container_id: str, image_id: str) -> None:
        """The build container's committed layers now belong to the image `image_id`, before
        the container is removed: with `SNAPSHOT` they are snapshots of the container's own
        filesystem, which moves into the image's place (ZFS `rename`); overlay: nothing."""
        ...
    def rootfs_path(self, container_id: str) -> Path:
        """Where the container's filesystem is (or will be) mounted."""
        ...
    def list_container_fs(self) -> list[str]: ...
    def mounted_container_fs(self) -> list[str]: ...
    async def cleanup(self, keep: Collection[str], running: Collection[str] = ()) -> list[Path]:
        """At start-up: unmount every container filesystem but those of `running` (adopted
        containers), delete the ones whose id is not in `keep` and the leftovers of
        interrupted operations."""
        ...


# --- processes --------------------------------------------------------------------------------


class NetworkMode(enum.Enum):
    HOST = "host"  # share the host's network stack
    NONE = "none"  # a private stack with loopback only
    NAMESPACE = "namespace"  # join an existing named namespace (vnet/ipnet containers)
    ADDRESSES = "addresses"  # the host's stack held to the container's addresses (ipnet on FreeBSD)


@dataclass(frozen=True)
class BindMount:
    source: Path  # host path, already resolved and checked by core
    destination: str  # absolute path inside the container (resolved inside the root)
    read_only: bool = False
    # Owned by the daemon (a volume): with a user namespace its owners are shifted into the
    # container's range, so container root owns what host root owns. Host binds are not.
    remap: bool = False


# --- isolation and resource control -----------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Resource limits of a container; None: no limit. Drivers map them to cgroups (Linux) or
    rctl rules (FreeBSD), see docs/security.md."""

    memory: int | None = None  # bytes
    memory_swap: int | None = None  # bytes of memory plus swap; -1: swap unlimited
    cpu_quota: int | None = None  # microseconds of CPU time per `cpu_period`
    cpu_period: int | None = None  # microseconds
    cpu_shares: int | None = None  # relative weight, 1024 is the default share
    pids: int | None = None  # tasks (processes and threads)
    nofile: tuple[int, int] | None = None  # (soft, hard) open files per process
    nproc: tuple[int, int] | None = None  # (soft, hard) processes per user


@dataclass(frozen=True)
class UserNamespace:
    """Container ids 0..size-1 are host ids uid_base.. and gid_base.. (a subordinate range)."""

    uid_base: int
    gid_base: int
    size: int


@dataclass(frozen=True)
class Usage:
    """One sample of a running container's counters, as the kernel keeps them."""

    cpu_ns: int  # CPU time used since the container started, all processes
    memory: int  # bytes in use, page cache that can be dropped excluded
    memory_limit: int | None
    pids: int
    pids_limit: int | None
    block_read: int  # bytes
    block_write: int
    net_rx: int | None  # bytes; None: the container shares the host's network stack
    net_tx: int | None


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a container, as `top` lists it."""

    pid: int  # host pid
    ppid: int
    uid: int  # as seen inside the container
    host_uid: int
    state: str  # R, S, D, Z, ...
    cpu_seconds: float
    rss: int  # bytes
    started: float  # unix seconds
    args: list[str]


@dataclass(frozen=True)
class TmpfsMount:
    """A fresh tmpfs (a build's `RUN --mount=type=tmpfs`); `size` in bytes, None for the kernel's default."""

    destination: str
    size: int | None = None


Mount = BindMount | TmpfsMount


@dataclass(frozen=True)
class ProcessSpec:
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    tty: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    id: str
    rootfs: Path
    hostname: str
    process: ProcessSpec
    mounts: list[Mount] = field(default_factory=list)
    network: NetworkMode = NetworkMode.HOST
    netns_path: str | None = None
    # Platform parameters already validated by `Runtime.check_params` (jail_param upstream).
    params: dict[str, str | None] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # Opaque to core: "" (the runtime's default), or a value `Runtime.check_seccomp` accepted.
    seccomp: str = ""
    userns: UserNamespace | None = None
    stop_signal: int = 15  # what `stop` sends first (the image's STOPSIGNAL; SIGTERM by default)
    # Where a runtime that `writes_logs` writes the container log (core's `logfiles` format);
    # the daemon rotates it (`Runtime.reopen_log`).
    log_path: Path | None = None


@dataclass(frozen=True)
class FoundContainer:
    """A container of ours that a restarted daemon finds still known to the runtime (through
    its monitor): running on, or ended while no daemon watched it."""

    id: str
    running: bool  # its monitor still watches it: the daemon may adopt it
    exit_code: int | None  # the exit status it ended with (128+N for a signal), when it ended
    oom: bool = False  # the kernel's OOM killer struck it
    finished_at: float | None = None  # unix seconds its end was recorded
    tty: bool = False  # its process has a terminal


class Process(Protocol):
    """A process the runtime started: a container's init or an exec.

    Output: with a TTY, `stdout` carries the terminal and `stderr` is None.
    `wait()` returns the exit code (128+N for a signal, as a shell shows it); whoever started
    the process must wait for it, which also releases its fds. `output_ends_at_exit`: its
    streams end once `wait()` returned (a monitor's connection), so they are read to the end;
    otherwise a grandchild may hold them open and the reader stops shortly after the exit.
    """

    pid: int
    stdin: trio.abc.SendStream | None
    stdout: trio.abc.ReceiveStream
    stderr: trio.abc.ReceiveStream | None

    async def wait(self) -> int: ...
    def resize(self, rows: int, cols: int) -> None: ...
    def signal(self, signum: int) -> None: ...
    async def aclose(self) -> None:
        """Close our ends of its stdio (not the process)."""
        ...


class Runtime(Protocol):
    """Runs containers: `create` makes one with everything but its process running (mounts,
    limits, the network sandbox joined), `start` runs its process.

    A runtime that `writes_logs` has a monitor per container that outlives the daemon: it owns
    the container's stdio, log and exit status, so a restarted daemon can `find_containers`
    and `adopt` the running ones. Execs are the daemon's children either way.
    """

    name: str  # "runc", "jail"
    writes_logs: bool  # the runtime writes `spec.log_path`: core keeps only recent output

    def version(self) -> str: ...
    def check_params(self, params: Sequence[str]) -> dict[str, str | None]:
        """Validate jail_param-style `key[=value]` strings; raise ValueError with a message.
        A runtime that keeps a bare `key` apart from an empty `key=` maps the first to None."""
        ...
    async def create(self, spec: ContainerSpec) -> Sandbox | None:
        """Create the container, its process not yet running; on failure nothing is left.
        Returns the container's network sandbox when the runtime made it (a FreeBSD vnet jail),
        None when it joined one the network driver made (`spec.netns_path`) or has none."""
        ...
    async def start(self, container_id: str) -> Process:
        """Run the created container's process (`spec.process`); on failure the caller deletes."""
        ...
    def find_containers(self) -> dict[str, FoundContainer]:
        """At start-up: the containers a previous daemon left, running or ended (ours only)."""
        ...
    def reopen_log(self, container_id: str) -> bool:
        """A runtime that `writes_logs`: start a new log file at `spec.log_path` (the daemon
        renamed the current one away); False when the container's monitor is gone."""
        ...
    async def adopt(self, container_id: str) -> Process:
        """Watch a found running container as if this daemon had started it. LookupError when
        it is not known; a container that ends meanwhile gives a process that ended."""
        ...
    async def exec(self, container_id: str, process: ProcessSpec) -> Process: ...
    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None: ...
    async def delete(self, container_id: str) -> None:
        """Forget a stopped container (idempotent); release its cgroups and bundle."""
        ...
    async def list_containers(self) -> dict[str, str]:
        """Containers this runtime knows of (ours only): id -> status."""
        ...
    async def cleanup(self, keep: Collection[str] = ()) -> None:
        """At start-up: remove every trace of our containers but those in `keep` (adopted)."""
        ...
    async def close(self) -> None:
        """At shutdown, once no container runs: release what all containers shared."""
        ...
    def process_count(self, container_id: str) -> int: ...

    # --- isolation and resource control (docs/security.md) ---
    def check_seccomp(self, profile: str) -> str:
        """Validate a container's seccomp setting ("", "default", "unconfined" or a profile in
        JSON); return it normalised. Raise ValueError with a one-line message."""
        ...
    def check_userns(self) -> None:
        """Raise ValueError saying why containers cannot run in a user namespace here."""
        ...
    async def update_limits(self, container_id: str, limits: Limits) -> None:
        """Apply `limits` to the running container (unset fields are lifted)."""
        ...
    def oom_kills(self, container_id: str) -> int:
        """How many processes the kernel killed for lack of memory in this run of the container."""
        ...
    def usage(self, container_id: str, pid: int) -> Usage | None:
        """The container's counters (`pid`: its init); None once it is gone."""
        ...
    def processes(self, container_id: str) -> list[ProcessInfo]: ...


# --- networks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """Where a running container's network lives (see the module docstring); opaque to core."""

    container_id: str
    handle: str  # a netns path on Linux, the jail's name on FreeBSD


@dataclass(frozen=True)
class PlugSpec:
    """One endpoint of a sandboxed container: what `NetworkDriver.plug` connects.

    `bridge` None is routed mode (a custom network on an interface that is not a bridge: host
    routes and proxy ARP on Linux; refused where the platform has no such mode). `gateway4`: None
    no default route, "" on-link, else the router; `gateway6`: None or the router. `index` is the
    endpoint's place among the container's plugs (Linux names the container end eth<index> and
    orders default routes by it).
    """

    endpoint_id: str
    index: int
    interface: str  # the network's interface
    bridge: str | None
    cidrs: tuple[str, ...]
    gateway4: str | None = None
    gateway6: str | None = None


class NetworkDriver(Protocol):
    """Network interfaces on the host and the containers' connections to them.

    Two modes per container network driver: *sandboxed* drivers (`sandboxed_drivers`) give the
    container a sandbox plugged into each of its networks; the others are *address-only*: the
    container shares the host's stack and owns addresses on the network's interface (ipnet on
    FreeBSD: aliases plus the jail's ip4.addr/ip6.addr). Every method is idempotent where it
    removes, and undoes its own partial work when it fails or is cancelled.
    """

    prefix: str  # host names derive from it (docs/architecture.md)
    sandboxed_drivers: frozenset[str]  # Linux {"vnet", "ipnet"}; FreeBSD {"vnet"}

    async def host_gateway(self) -> str:
        """The interface of the IPv4 default route; "" when there is none."""
        ...
    async def interface_kind(self, name: str) -> str | None:
        """None: no such interface; else "bridge", "loopback", "epair"/"veth", "device", ..."""
        ...
    async def is_owned(self, name: str) -> bool: ...
    async def owned_interfaces(self) -> list[str]: ...
    async def interface_addresses(self, name: str) -> list[str]:
        """The interface's addresses as cidrs (link-local ones left out)."""
        ...
    async def enable_forwarding(self, *, ipv6: bool) -> None: ...
    async def create_interface(self, name: str, kind: Literal["loopback", "bridge"]) -> None:
        """A network's own interface, marked as ours. Core asks only for names no interface has;
        a driver may refuse one held by an interface that is not ours (ValueError)."""
        ...
    async def configure_interface(self, name: str, cidrs: Sequence[str], routes: Sequence[str], *,
                                  ipv6: bool) -> None:
        """Up, with `cidrs` (gateway addresses) and host `routes`; adds only what is missing."""
        ...
    async def destroy_interface(self, name: str) -> None:
        """Destroy an interface of ours (idempotent); one that is not ours raises ValueError."""
        ...

    # --- sandboxed containers ---
    async def create_sandbox(self, container_id: str) -> Sandbox | None:
        """Before the runtime creates the container: a netns (Linux), or None when the runtime's
        own container is the sandbox (FreeBSD: `Runtime.create` makes the vnet jail)."""
        ...
    async def destroy_sandbox(self, container_id: str) -> None: ...
    async def existing_sandbox(self, container_id: str) -> Sandbox | None:
        """The sandbox a previous daemon made for a container that runs on (live restore), as
        `create_sandbox` returned it; None when it is gone. Creates nothing."""
        ...
    def host_end(self, plug: PlugSpec) -> str:
        """The host end's name `plug` gave (or gives) this spec, without touching the host."""
        ...
    async def sandboxes(self) -> list[str]:
        """Ids of the containers that have a sandbox of ours (start-up reconcile)."""
        ...
    async def plug(self, sandbox: Sandbox, plug: PlugSpec) -> str:
        """Connect the sandbox to a network; return the host end's name (the API's `epair`)."""
        ...
    async def unplug(self, host_end: str, plug: PlugSpec, *, sandbox: Sandbox | None) -> None: ...

    # --- address-only containers ---
    async def add_address(self, interface: str, address: str) -> None:
        """`address` as a host address (/32, /128) on `interface`, unless already there."""
        ...
    async def remove_address(self, interface: str, address: str) -> None: ...
    async def set_addresses(self, sandbox: Sandbox, ip4: Sequence[str], ip6: Sequence[str]) -> None:
        """Replace the addresses a running address-only container may use (FreeBSD: `jail -m`)."""
        ...


class Firewall(Protocol):
    """The daemon's packet rules (one nftables table on Linux, pf rules or an anchor on FreeBSD),
    always replaced whole from the store, atomically; the host's other rules are never touched."""

    async def apply(self, networks: Sequence[Network], ports: Sequence[PublishedPort], *, host_gateway: str,
                    plugs: Mapping[str, Sequence[str]]) -> None:
        """`plugs`: network id -> the host ends of its running containers' plugs."""
        ...
    async def remove(self) -> None: ...


# --- image sources and build files ------------------------------------------------------------


class RootfsSource(Protocol):
    """What image creation needs from the host (`platform.posix.rootfs` and its subclasses).

    Failures the client should read raise `ValueError` (its text is the reason); failed host
    commands raise `HostCommandError`; host trouble raises `OSError`. `output` receives raw
    progress text (a download's progress, debootstrap's lines); `on_count` receives the number
    of entries written so far, every hundred or so.
    """

    def fetched(self, url: str, output: Emit) -> contextlib.AbstractAsyncContextManager[Path]:
        """A local path holding the archive at `url` while the block runs."""
        ...

    async def extract(self, archive: Path, dest: Path, on_count: Count) -> int: ...
    async def copy_dir(self, source: str, dest: Path, on_count: Count) -> int: ...
    async def bootstrap(self, dest: Path, output: Emit) -> tuple[str, str]:
        """Install the host's own system into `dest`; return (name, architecture)."""
        ...

    async def add_host_file(self, host_path: str, dest: Path, path_in_root: str) -> bool:
        """Copy a host file into the layer; False when the host has no such file."""
        ...

    async def update(self, root: Path, output: Emit) -> None:
        """Bring the new image's system up to date (`freebsd-update` on FreeBSD). Raises
        NotImplementedError with a one-line reason where the host has no such tool."""
        ...

    def cleanup(self) -> None:
        """At start-up: delete what a previous daemon left in the work directory."""
        ...


class CopyPlan(Protocol):
    def __len__(self) -> int: ...
    def digest(self) -> str: ...
    def add_inline(self, name: str, data: bytes) -> None: ...
    def add_file(self, name: str, path: Path, *, mode: int, mtime: float | None) -> None: ...
    def unpack_archives(self) -> None: ...
    def apply(self, rootfs: Path, dest: str, *, into_dir: bool, uid: int, gid: int, check: Callable[[], None],
              chmod: Callable[[int, bool], int] | None = None, chown: bool = False) -> int: ...


class PathFilter(Protocol):
    """What `.dockerignore` rules answer (`kleene_protocol.dockerignore.DockerIgnore`)."""

    def is_ignored(self, relpath: str) -> bool: ...
    def should_descend(self, reldir: str) -> bool: ...


class BuildFiles(Protocol):
    """The host side of COPY and uploads (`platform.posix.copying.HostFiles`); methods block, raise ValueError."""

    def plan(self, tree: Path, patterns: Sequence[str], ignore: PathFilter | None, *,
             excludes: PathFilter | None = None, parents: bool = False) -> CopyPlan: ...
    def unpack(self, archive: Path, dest: Path, *, max_bytes: int, check: Callable[[], None]) -> int: ...
