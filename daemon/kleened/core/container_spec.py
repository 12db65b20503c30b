"""What a container's processes run with: the process spec (user, groups, working directory,
environment) and the bind mounts, computed from the container record and its mounted root.

Pure decisions on files read inside the root (`platform.posix.rootpath`); nothing here changes the
host except creating mount targets inside the container's own filesystem.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path

from kleene_protocol.models import MountPoint

from ..platform.base import BindMount, ProcessSpec
from ..platform.posix.rootpath import PathEscape, ensure_target, read_text_in_root, resolve_in_root
from .environment import login_env, merge_env
from .errors import InvalidArgument
from .records import ContainerRecord
from .users import resolve_user

# Where a mount may not go: the runtime owns these (procfs, sysfs, devices, its init).
RESERVED_DESTINATIONS = ("/proc", "/sys", "/dev", "/.init")


def check_destination(destination: str) -> str:
    """The normalised mount destination, or InvalidArgument with the reason."""
    if not destination.startswith("/"):
        raise InvalidArgument(f"mount destination '{destination}' must be an absolute path")
    if "\0" in destination:
        raise InvalidArgument("mount destination must not contain NUL")
    normal = posixpath.normpath(destination)
    if normal == "/":
        raise InvalidArgument("a mount cannot replace the container's root '/'")
    for reserved in RESERVED_DESTINATIONS:
        if normal == reserved or normal.startswith(reserved + "/"):
            raise InvalidArgument(f"mount destination '{destination}' is reserved: '{reserved}' belongs to the runtime")
    return normal


def process_spec(rootfs: Path, record: ContainerRecord, argv: Sequence[str], user_spec: str, env: Sequence[str],
                 tty: bool) -> ProcessSpec:
    """The process `argv` runs as in the container whose root is mounted at `rootfs`.

    The user and their groups come from the image's /etc/passwd and /etc/group (as `initgroups`
    computes them: the primary group and every group that lists the user); the working directory
    is the image's, or the user's home when the image has none, or `/` when that does not exist.
    """
    try:
        user = resolve_user(user_spec, read_text_in_root(rootfs, "/etc/passwd"),
                            read_text_in_root(rootfs, "/etc/group"))
    except PathEscape as exc:
        raise InvalidArgument(str(exc)) from None
    cwd = record.workdir if record.workdir not in ("", "/") else user.home
    try:
        if not resolve_in_root(rootfs, cwd).is_dir():
            cwd = "/"
    except PathEscape:
        cwd = "/"
    base = login_env(user=user.name, home=user.home, cwd=cwd, tty=tty)
    return ProcessSpec(args=list(argv), env=merge_env(base, record.env, list(env)), cwd=cwd, uid=user.uid,
                       gid=user.gid, additional_gids=list(user.groups), tty=tty)


def bind_mounts(rootfs: Path, mounts: Sequence[MountPoint], volume_path: Callable[[str], Path]) -> list[BindMount]:
    """The container's volumes and host paths, with their targets made inside its root.

    A target is resolved inside the root (a symlink in the image cannot send it to the host).
    """
    binds = []
    for m in mounts:
        source = volume_path(m.source) if m.type == "volume" else Path(m.source)
        if not source.exists():
            raise InvalidArgument(f"could not mount '{m.source}': it no longer exists")
        try:
            ensure_target(rootfs, m.destination, directory=source.is_dir())
        except PathEscape as exc:
            raise InvalidArgument(f"could not mount '{m.source}' on '{m.destination}': {exc}") from None
        except OSError as exc:
            raise InvalidArgument(f"could not mount '{m.source}' on '{m.destination}': {exc.strerror}") from None
        binds.append(BindMount(source=source, destination=m.destination, read_only=m.read_only,
                               remap=m.type == "volume"))
    return binds


def with_entrypoint(entrypoint: list[str] | None, cmd: list[str] | None) -> list[str] | None:
    """The command a container of an image with ENTRYPOINT runs: the entrypoint, then the
    container's (or the image's) command as its arguments, as docker does."""
    if not entrypoint:
        return cmd
    return [*entrypoint, *(cmd or [])]
