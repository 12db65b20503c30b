"""The interfaces between core and the host drivers.

Vocabulary:
- a *layer* is a read-only filesystem delta, named by a 12-hex id; an image is an ordered
  stack of layers (bottom first) and each build snapshot names a prefix of that stack;
- a *container filesystem* is the stack of its image's layers up to the chosen snapshot plus
  the container's own writable layer; it is mounted while the container runs;
- a *volume* is a directory the daemon owns, bind-mounted into containers.

Drivers raise `HostCommandError` when a host command fails; core translates it.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from kleene_protocol.operations import PathStat


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
    def list_volumes(self) -> list[str]: ...
    async def populate_volume(self, name: str, source: Path) -> None:
        """Copy `source` (a directory in a container's mounted filesystem) into the volume."""
        ...


class LayerStorage(Protocol):
    driver: str  # "overlay", "zfs"

    def layer_path(self, layer_id: str) -> Path: ...
    async def create_layer(self) -> tuple[str, Path]:
        """A new empty layer to fill (extract a base image into it). Not yet usable by others."""
        ...
    async def remove_layer(self, layer_id: str) -> None: ...
    def list_layers(self) -> list[str]: ...

    async def create_container_fs(self, container_id: str) -> None:
        """The container's own writable layer, empty."""
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
    async def commit_container_fs(self, container_id: str) -> str:
        """Turn the (unmounted) container layer into a new read-only layer; return its id.

        The container gets a fresh empty writable layer on top of the new one.
        """
        ...
    def rootfs_path(self, container_id: str) -> Path:
        """Where the container's filesystem is (or will be) mounted."""
        ...
    def list_container_fs(self) -> list[str]: ...
    def mounted_container_fs(self) -> list[str]: ...
    async def cleanup(self, keep: Collection[str]) -> list[Path]:
        """At start-up, when no container runs: unmount every container filesystem, delete the
        ones whose id is not in `keep` and the leftovers of interrupted operations."""
        ...


# --- processes --------------------------------------------------------------------------------


class NetworkMode(enum.Enum):
    HOST = "host"  # share the host's network stack
    NONE = "none"  # a private stack with loopback only
    NAMESPACE = "namespace"  # join an existing named namespace (vnet/ipnet containers)


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
    params: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # Opaque to core: "" (the runtime's default), or a value `Runtime.check_seccomp` accepted.
    seccomp: str = ""
    userns: UserNamespace | None = None
    stop_signal: int = 15  # what `stop` sends first (the image's STOPSIGNAL; SIGTERM by default)


class Process(Protocol):
    """A process the runtime started: a container's init or an exec.

    Output: with a TTY, `stdout` carries the terminal and `stderr` is None.
    `wait()` returns the exit code (128+N for a signal, as a shell shows it); whoever started
    the process must wait for it, which also releases its fds.
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
    name: str  # "runc", "jail"

    def version(self) -> str: ...
    def check_params(self, params: Sequence[str]) -> dict[str, str]:
        """Validate jail_param-style `key[=value]` strings; raise ValueError with a message."""
        ...
    async def start(self, spec: ContainerSpec) -> Process:
        """Create and start the container; its init runs `spec.process`."""
        ...
    async def exec(self, container_id: str, process: ProcessSpec) -> Process: ...
    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None: ...
    async def delete(self, container_id: str) -> None:
        """Forget a stopped container (idempotent); release its cgroups and bundle."""
        ...
    async def list_containers(self) -> dict[str, str]:
        """Containers this runtime knows of (ours only): id -> status."""
        ...
    async def cleanup(self) -> None:
        """At start-up, when none of our containers may run: remove every trace of them."""
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
