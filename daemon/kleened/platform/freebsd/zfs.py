"""ZFS as data: upstream's dataset layout, every `zfs` command line, and parsers of its output.

Layout (upstream's, freebsd-backend.md §2.1), under the configured `kleene_root` dataset:

    <root>/image/<id>        an image; snapshots `@image` (what containers clone) and one
                             `@<12hex>` per build step (what `FROM image@snap` clones)
    <root>/container/<id>    a container or a build container: a clone of `image@<snap>`
    <root>/volumes/<name>    a volume

Vocabulary: a *dataset* is a filesystem name (`zroot/kleene/image/abc`), a *snapshot* is
`<dataset>@<name>`, and a *mountpoint* is where a dataset is mounted: always asked from ZFS,
never guessed from the name (B8); `none` and `legacy` are refused (B24).

Every command is an argv, never a shell string (B10): names are checked here (`check_dataset`)
and `zfs send | zfs receive` runs as two processes (`Commands.pipe`). Image removal looks for
clones first and never uses `-R` (a clone is a container or image that depends on the image).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_SNAPSHOT = "image"
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class DatasetError(ValueError):
    """A dataset name or state kleened refuses; `str()` is the message for the client."""


def check_dataset(name: str) -> str:
    """A ZFS filesystem name kleened passes on: components of letters, digits and `_.:-`."""
    parts = name.split("/")
    if not name or any(not _COMPONENT.fullmatch(p) or p in (".", "..") for p in parts):
        raise DatasetError("invalid dataset")  # upstream's message for zfs-copy/zfs-clone sources
    return name


def check_volume_name(name: str) -> str:
    """One dataset component: upstream let `a/b` create nested datasets; kleened refuses it."""
    if not _VOLUME.fullmatch(name):
        raise DatasetError(f"invalid volume name '{name}': use letters, digits, '_', '.' and '-' (no '/')")
    return name


def snapshot(dataset: str, name: str) -> str:
    return f"{dataset}@{name}"


@dataclass(frozen=True)
class Layout:
    """Upstream's dataset names under `root` (the `kleene_root` config key)."""

    root: str

    def __post_init__(self) -> None:
        check_dataset(self.root)

    @property
    def images(self) -> str:
        return f"{self.root}/image"

    @property
    def containers(self) -> str:
        return f"{self.root}/container"

    @property
    def volumes(self) -> str:
        return f"{self.root}/volumes"

    def parents(self) -> list[str]:
        """What `init` creates, parents first."""
        return [self.root, self.images, self.containers, self.volumes]

    def image(self, image_id: str) -> str:
        return f"{self.images}/{check_dataset(image_id)}"

    def container(self, container_id: str) -> str:
        return f"{self.containers}/{check_dataset(container_id)}"

    def volume(self, name: str) -> str:
        return f"{self.volumes}/{check_volume_name(name)}"

    def owner(self, dataset: str) -> tuple[str, str] | None:
        """("image"|"container"|"volume", id or name) for a dataset directly under our parents."""
        for kind, parent in (("image", self.images), ("container", self.containers), ("volume", self.volumes)):
            head, _, tail = dataset.partition("@")[0].rpartition("/")
            if head == parent and tail:
                return kind, tail
        return None


# --- command lines -----------------------------------------------------------------------------


def create_argv(dataset: str) -> list[str]:
    """A plain `zfs create` as upstream: no -p (a missing parent is an error), inherited properties."""
    return ["zfs", "create", check_dataset(dataset)]


def destroy_argv(target: str, *, recursive: bool = False, force: bool = False) -> list[str]:
    """`-r` takes the dataset's snapshots with it; never `-R` (that would take clones: other
    containers and images)."""
    flags = "-" + ("r" if recursive else "") + ("f" if force else "")
    return ["zfs", "destroy", *([flags] if flags != "-" else []), target]


def snapshot_argv(dataset: str, name: str) -> list[str]:
    if not _COMPONENT.fullmatch(name):
        raise DatasetError(f"invalid snapshot name '{name}'")
    return ["zfs", "snapshot", snapshot(check_dataset(dataset), name)]


def clone_argv(origin: str, target: str) -> list[str]:
    """A container (or an image made by zfs-clone) as a clone of a snapshot: created and mounted
    in one step, sharing every block with its origin."""
    return ["zfs", "clone", origin, check_dataset(target)]


def rename_argv(source: str, target: str) -> list[str]:
    """Build container -> image. `-f` force-unmounts leftovers; the step snapshots move along."""
    return ["zfs", "rename", "-f", check_dataset(source), check_dataset(target)]


def promote_argv(dataset: str) -> list[str]:
    """The clone takes over its origin's snapshots up to its origin snapshot; the former origin
    becomes a clone of it (and can then be destroyed)."""
    return ["zfs", "promote", check_dataset(dataset)]


def send_argv(origin: str) -> list[str]:
    return ["zfs", "send", origin]


def receive_argv(target: str) -> list[str]:
    return ["zfs", "receive", check_dataset(target)]


def get_argv(dataset: str, *props: str) -> list[str]:
    """One dataset's properties, tab-separated, no header (exits 1 when it does not exist)."""
    return ["zfs", "list", "-H", "-o", ",".join(props), dataset]


def children_argv(parent: str) -> list[str]:
    """The filesystems directly under `parent` (parent included, first)."""
    return ["zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-d", "1", parent]


def snapshots_argv(dataset: str) -> list[str]:
    """Snapshots of `dataset` and of everything under it, each with its clones (`-` for none)."""
    return ["zfs", "list", "-H", "-o", "name,clones", "-t", "snapshot", "-r", dataset]


# --- parsers -----------------------------------------------------------------------------------


def parse_mountpoint(dataset: str, text: str) -> Path:
    """The mountpoint `zfs list -H -o mountpoint` printed; `none`/`legacy` cannot hold a jail."""
    value = text.strip()
    if value in ("none", "legacy", "-", "") or not value.startswith("/"):
        raise DatasetError(f"dataset {dataset} has mountpoint '{value}': kleened needs a mounted filesystem")
    return Path(value)


def parse_names(text: str) -> list[str]:
    return [line.split("\t")[0] for line in text.splitlines() if line.strip()]


def parse_children(parent: str, text: str) -> list[str]:
    """Last components of the datasets directly under `parent` (parent itself left out)."""
    return [name.rpartition("/")[2] for name in parse_names(text) if name.startswith(parent + "/")]


def parse_clones(text: str) -> dict[str, list[str]]:
    """`name,clones` lines -> snapshot -> the datasets cloned from it."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, clones = line.partition("\t")
        out[name] = [c for c in clones.strip().split(",") if c and c != "-"]
    return out


def snapshot_names(dataset: str, clones: dict[str, list[str]]) -> list[str]:
    """The snapshot names (after `@`) of `dataset` itself, in ZFS's (creation) order."""
    return [name.partition("@")[2] for name in clones if name.partition("@")[0] == dataset]


def heir(dataset: str, clones: dict[str, list[str]]) -> str | None:
    """The clone to promote before `dataset` is destroyed: one of its latest cloned snapshot's
    clones outside it (promoting it moves every earlier snapshot too, and the other clones of
    the moved snapshots follow them), or None when nothing outside depends on `dataset`."""
    found = None
    for snap, users in clones.items():
        if snap.partition("@")[0] != dataset:
            continue
        outside = sorted(c for c in users if c != dataset and not c.startswith(dataset + "/"))
        if outside:
            found = outside[0]
    return found


def dependents(layout: Layout, dataset: str, clones: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(container ids, image ids) cloned from any snapshot of `dataset`: what keeps it alive."""
    containers, images = [], []
    for snap, users in clones.items():
        if snap.partition("@")[0] != dataset:
            continue
        for clone in users:
            owner = layout.owner(clone)
            if owner is not None and owner[0] == "container":
                containers.append(owner[1])
            elif owner is not None and owner[0] == "image":
                images.append(owner[1])
    return sorted(set(containers)), sorted(set(images))


def in_use_message(image_id: str, containers: Sequence[str], images: Sequence[str]) -> str:
    """Upstream's message (containers are reported first)."""
    if containers:
        return f"could not remove image {image_id} since it is used for containers:\n" + "\n".join(containers)
    return f"could not remove image {image_id} since it is used for images:\n" + "\n".join(images)
