"""The host side of RUN mounts and ADD downloads: a build's scratch directory, cache-mount directories, mount-target
stubs in a container root, and the scan that keeps secrets out of layers.

Layout: every build gets `<tmp>/build-<id>/` (mode 0700) for secrets, heredoc scripts, downloads and throw-away
copies; it goes when the build ends, and start-up removes any a killed daemon left (`clear_scratch`). Cache mounts
live in `<cache_root>/<key>/<instance>/`, where `key` is a hash the core derives from the cache id: an id is never a
path, so `id=../../etc` stays inside the cache root.

Mount targets: a bind or tmpfs mount needs its target to exist in the root. `make_targets` creates what is missing
(directories, or an empty file for a file bind) and reports exactly what it created, so `remove_stubs` can take
those stubs out again after the RUN (when they are still empty stubs), and no layer keeps `/run/secrets/x`.

Everything here is synchronous and meant for a worker thread.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from kleened.platform.posix.download import Downloaded, download
from kleened.platform.posix.rootpath import PathEscape, ensure_target, resolve_in_root

CHUNK = 1 << 20
SCRATCH_PREFIX = "build-"
# uname machine -> OCI architecture and variant (the names Dockerfiles use in --platform and TARGETARCH)
_ARCHES = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}  # fmt: skip


def host_platform() -> str:
    """The host's platform as `os/arch[/variant]` (`linux/amd64`): what builds run and produce."""
    machine = os.uname().machine
    arch, variant = _ARCHES.get(machine, (machine, ""))
    return "/".join(p for p in (os.uname().sysname.lower(), arch, variant) if p)


class BuildHost:
    """Host files of build steps (the `core.builder.runmounts.RunHost` interface)."""

    def __init__(self, cache_root: Path, tmp_dir: Path) -> None:
        self.cache_root = cache_root
        self.tmp_dir = tmp_dir

    # --- scratch directories ------------------------------------------------------------------

    def make_scratch(self, build_id: str) -> Path:
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.tmp_dir / f"{SCRATCH_PREFIX}{build_id}"
        path.mkdir(mode=0o700)
        return path

    def remove_tree(self, path: Path) -> None:
        """Remove a scratch directory or a cache instance (never a mountpoint: nothing is mounted there)."""
        shutil.rmtree(path, ignore_errors=True)

    def clear_scratch(self) -> list[str]:
        """At start-up: remove the scratch directories of builds a killed daemon left."""
        if not self.tmp_dir.is_dir():
            return []
        stale = [p for p in self.tmp_dir.iterdir() if p.name.startswith(SCRATCH_PREFIX) and p.is_dir()]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return [p.name for p in stale]

    def write_file(self, path: Path, data: bytes, *, mode: int, uid: int, gid: int) -> None:
        """A new private file (a secret, a heredoc script) with exactly this mode and owner."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            if os.geteuid() == 0:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    async def fetch(self, url: str, path: Path, *, max_bytes: int) -> Downloaded:
        """ADD <url>: download into `path` (a new file). Raises `DownloadError` (a ValueError)."""
        return await download(url, path, max_bytes=max_bytes)

    # --- cache mounts -------------------------------------------------------------------------

    def cache_path(self, key: str, instance: int) -> Path:
        if not key.isalnum():
            raise ValueError(f"invalid cache key {key!r}")
        return self.cache_root / key / str(instance)

    def ensure_cache(self, key: str, instance: int, *, mode: int, uid: int, gid: int) -> bool:
        """Create the cache directory unless it exists; True when it was created now."""
        path = self.cache_path(key, instance)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return False
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        os.chmod(path, mode)
        return True

    def list_caches(self) -> list[str]:
        if not self.cache_root.is_dir():
            return []
        return sorted(p.name for p in self.cache_root.iterdir() if p.is_dir())

    def cache_size(self, key: str) -> int:
        """Bytes of file content under a cache key (all its instances)."""
        total = 0
        for directory, _dirs, files in os.walk(self.cache_root / key):
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_size
                except OSError:
                    continue
        return total

    def remove_cache(self, key: str) -> None:
        if key.isalnum():
            shutil.rmtree(self.cache_root / key, ignore_errors=True)

    # --- mount targets ------------------------------------------------------------------------

    def make_targets(self, rootfs: Path, targets: Sequence[tuple[str, bool]]) -> list[str]:
        """Create each `(path, is_dir)` target missing in `rootfs`; return what was created, parents first, as
        paths relative to the root. Raises `PathEscape`."""
        created: list[str] = []
        root = Path(os.path.realpath(rootfs))
        for path, is_dir in targets:
            target = resolve_in_root(root, path)
            missing = []
            probe = target
            while probe != root and not os.path.lexists(probe):
                missing.append(probe)
                probe = probe.parent
            ensure_target(root, path, directory=is_dir)
            created += [str(p.relative_to(root)) for p in reversed(missing)]
        return created

    def remove_stubs(self, rootfs: Path, created: Sequence[str]) -> None:
        """Remove what `make_targets` created, deepest first, where it is still an empty directory or file."""
        root = Path(os.path.realpath(rootfs))
        for rel in sorted(created, key=lambda p: p.count("/"), reverse=True):
            try:
                parent = resolve_in_root(root, os.path.dirname(rel))
                path = parent / os.path.basename(rel)
                st = os.lstat(path)
            except (OSError, PathEscape):
                continue
            try:
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(path)  # fails when something was written into it: then it stays
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(path)
            except OSError:
                continue

    # --- secrets ------------------------------------------------------------------------------

    def find_bytes(self, tree: Path, needles: Sequence[bytes], check: Callable[[], None]) -> str | None:
        """The path (relative to `tree`) of the first regular file that contains one of `needles`, or None."""
        longest = max((len(n) for n in needles), default=0)
        if not longest:
            return None
        for directory, _dirs, files in os.walk(tree):
            for name in files:
                check()
                path = os.path.join(directory, name)
                if _contains(path, needles, longest):
                    return os.path.relpath(path, tree)
        return None


def _contains(path: str, needles: Sequence[bytes], longest: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with open(fd, "rb") as data:
        if not stat.S_ISREG(os.fstat(data.fileno()).st_mode):
            return False
        tail = b""
        while chunk := data.read(CHUNK):
            window = tail + chunk
            if any(n in window for n in needles):
                return True
            tail = window[-(longest - 1) :] if longest > 1 else b""
    return False
