"""What `system info` and `system df` read from a Linux host: the cgroup mode, and the bytes
under the overlay driver's directories (layers, containers' writable layers, volumes, build
caches).

Sizes (`posix.sizes.tree_size`) are apparent sizes (file content, as `du --apparent-size` counts it), each inode once:
a hard-linked file is counted at its first name. Directories and links count nothing; overlay
whiteouts are character devices and count nothing either. Synchronous: callers run it in a
worker thread.
"""

from __future__ import annotations

from pathlib import Path

from kleened.platform.posix.sizes import tree_size


def cgroup_mode(root: Path = Path("/sys/fs/cgroup")) -> str:
    """"v2" (unified), "hybrid" (v1 with a unified hierarchy beside), "v1", or "none"."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "unified" / "cgroup.controllers").exists():
        return "hybrid"
    if root.is_dir() and any(root.iterdir()):
        return "v1"
    return "none"


class OverlaySizes:
    """`DiskSizes` (platform.base) for the overlay driver's layout under the state root."""

    def __init__(self, state_root: Path, cache_root: Path) -> None:
        self._root = state_root
        self._caches = cache_root

    def layer(self, layer_id: str) -> int:
        return tree_size(self._root / "layers" / layer_id)

    def container(self, container_id: str) -> int:
        return tree_size(self._root / "containers" / container_id / "upper")

    def volume(self, name: str) -> int:
        return tree_size(self._root / "volumes" / name)

    def build_cache(self) -> int:
        return tree_size(self._caches)


