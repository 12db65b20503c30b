"""The mounts of one RUN (`RUN --mount`, a `#!` heredoc script): what they add to the cache key, and setting them up.

- `bind`: from the context (read-only in place; a copy when .dockerignore has rules, so ignored files stay
  hidden, or when `rw`, so writes never reach the context), or from a stage or image (a throw-away filesystem of
  its layers, writable for `rw`, discarded after the RUN). The source is resolved inside its tree.
- `cache`: a persistent directory (`cachemounts`), `from=` filling a new one.
- `tmpfs`: a fresh tmpfs. `secret`: a private read-only file, and/or an environment variable (`secrets`).
- a heredoc script: a read-only executable file at `/dev/pipes/<name>`, BuildKit's place.

Key: what a mount makes the RUN depend on: the spec (type, target, id, sharing, options) and, for binds, the
content (the context files' digest; a stage's or image's layer ids). Never a cache's or a secret's content.

Targets missing in the image are created before the RUN and removed after it when still empty (`RunHost`), so
no layer keeps `/run/secrets/x` or an empty cache target.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from kleene_protocol.ids import new_id

from ...platform.base import BindMount, Mount, TmpfsMount
from ...platform.posix.rootpath import PathEscape, resolve_in_root
from .cachemounts import CacheHost
from .instructions import Run
from .mountspec import MountSpec, resolve_target

if TYPE_CHECKING:
    from .steps import Stage, StepRunner

RUNC_OWNED = ("/dev/", "/proc/", "/sys/")  # runc makes targets there itself, in filesystems no layer keeps
SECRET_MODE = 0o400
SCRIPT_MODE = 0o755


class RunHost(CacheHost, Protocol):
    """The host driver of RUN mounts (`platform.linux.buildhost.BuildHost`); methods block."""

    def make_scratch(self, build_id: str) -> Path: ...
    def clear_scratch(self) -> list[str]: ...
    def remove_tree(self, path: Path) -> None: ...
    def write_file(self, path: Path, data: bytes, *, mode: int, uid: int, gid: int) -> None: ...
    def make_targets(self, rootfs: Path, targets: Sequence[tuple[str, bool]]) -> list[str]: ...
    def remove_stubs(self, rootfs: Path, created: Sequence[str]) -> None: ...
    def find_bytes(self, tree: Path, needles: Sequence[bytes], check: object) -> str | None: ...
    async def fetch(self, url: str, path: Path, *, max_bytes: int) -> Fetched: ...


class Fetched(Protocol):
    sha256: str  # "sha256:<hex>"
    last_modified: float | None


class MountFailed(Exception):
    """A mount cannot be set up; `str()` is the build log's line."""


@dataclass(eq=False)
class Prepared:
    mounts: list[Mount] = field(default_factory=list)
    env: list[str] = field(default_factory=list)  # secrets given as variables
    secrets: list[bytes] = field(default_factory=list)  # the values this RUN can see
    targets: list[tuple[str, bool]] = field(default_factory=list)  # (absolute target, is a directory)


async def key_parts(runner: StepRunner, stage: Stage, instr: Run) -> list[object]:
    """What the RUN's mounts add to its cache key."""
    parts: list[object] = []
    for spec in instr.mounts:
        part: list[object] = [spec.type, resolve_target(spec.target, stage.workdir) if spec.target else "",
                              spec.id, spec.from_, spec.source, spec.read_only, spec.sharing, spec.mode, spec.uid,
                              spec.gid, spec.size, spec.env]
        if spec.type == "bind":
            part.append(await runner.tree_digest(spec.from_, spec.source or "."))
        parts.append(part)
    if instr.script is not None:
        parts.append(["script", instr.script.name, instr.script.content])
    return parts


@contextlib.asynccontextmanager
async def prepared(runner: StepRunner, stage: Stage, instr: Run) -> AsyncIterator[Prepared]:
    """Set up the RUN's mounts for the duration of the block; everything made is undone, shielded, after it."""
    result = Prepared()
    async with contextlib.AsyncExitStack() as stack:
        for spec in instr.mounts:
            target = resolve_target(spec.target, stage.workdir) if spec.target else ""
            if spec.type == "bind":
                await _bind(runner, stack, result, spec, target)
            elif spec.type == "cache":
                await _cache(runner, stack, result, spec, target)
            elif spec.type == "tmpfs":
                result.mounts.append(TmpfsMount(destination=target, size=spec.size))
                result.targets.append((target, True))
            else:
                await _secret(runner, stack, result, spec, target)
        if instr.script is not None:
            path = await _private_file(runner, stack, f"script-{instr.script.name}",
                                       instr.script.content.encode(), SCRIPT_MODE, 0, 0)
            destination = posixpath.join("/dev/pipes", instr.script.name)
            result.mounts.append(BindMount(source=path, destination=destination, read_only=True))
        yield result


async def _bind(runner: StepRunner, stack: contextlib.AsyncExitStack, result: Prepared, spec: MountSpec,
                target: str) -> None:
    tree, ignore, _key = await stack.enter_async_context(runner.source_tree(spec.from_))
    source = _inside(tree, spec.source or ".", spec.from_)
    is_dir = source.is_dir()
    if spec.from_ is None and (not spec.read_only or (ignore is not None and ignore.patterns)):
        source = await _copy_of(runner, stack, tree, spec.source or ".", ignore, is_dir)
    result.mounts.append(BindMount(source=source, destination=target, read_only=spec.read_only))
    result.targets.append((target, is_dir))


async def _copy_of(runner: StepRunner, stack: contextlib.AsyncExitStack, tree: Path, source: str,
                   ignore: object, is_dir: bool) -> Path:
    """A throw-away copy of a context path, without what .dockerignore ignores."""
    copy = await runner.scratch_dir() / f"bind-{new_id()}"
    await trio.to_thread.run_sync(copy.mkdir)
    assert runner.host is not None
    stack.push_async_callback(_shielded, runner.host.remove_tree, copy)
    plan = await trio.to_thread.run_sync(lambda: runner.files.plan(tree, [source], ignore))  # type: ignore[arg-type]
    await trio.to_thread.run_sync(lambda: plan.apply(copy, "/", into_dir=True, uid=0, gid=0,
                                                     check=trio.from_thread.check_cancelled))
    return copy if is_dir else copy / posixpath.basename(posixpath.normpath(source))


async def _cache(runner: StepRunner, stack: contextlib.AsyncExitStack, result: Prepared, spec: MountSpec,
                 target: str) -> None:
    async def populate(path: Path) -> None:
        async with runner.source_tree(spec.from_) as (tree, _ignore, _key):
            source = spec.source or "."
            _inside(tree, source, spec.from_)
            plan = await trio.to_thread.run_sync(lambda: runner.files.plan(tree, [source], None))
            await trio.to_thread.run_sync(lambda: plan.apply(path, "/", into_dir=True, uid=spec.uid, gid=spec.gid,
                                                             check=trio.from_thread.check_cancelled))

    path = await stack.enter_async_context(runner.cache_mounts.use(
        spec.id, spec.sharing, mode=0o755 if spec.mode is None else spec.mode, uid=spec.uid, gid=spec.gid,
        populate=populate if spec.from_ is not None else None))
    result.mounts.append(BindMount(source=path, destination=target, read_only=spec.read_only))
    result.targets.append((target, True))


async def _secret(runner: StepRunner, stack: contextlib.AsyncExitStack, result: Prepared, spec: MountSpec,
                  target: str) -> None:
    value = runner.secrets.get(spec.id)
    if value is None:
        if spec.required:
            raise MountFailed(f"error: secret '{spec.id}' is required, but the build was given no such secret")
        return
    result.secrets.append(value)
    if spec.env:
        result.env.append(f"{spec.env}={value.decode(errors='replace')}")
    if target:
        mode = SECRET_MODE if spec.mode is None else spec.mode
        path = await _private_file(runner, stack, f"secret-{spec.id}-{len(result.mounts)}", value, mode,
                                   spec.uid, spec.gid)
        result.mounts.append(BindMount(source=path, destination=target, read_only=True))
        result.targets.append((target, False))


async def _private_file(runner: StepRunner, stack: contextlib.AsyncExitStack, name: str, data: bytes, mode: int,
                        uid: int, gid: int) -> Path:
    path = await runner.scratch_dir() / name
    stack.push_async_callback(_shielded, _unlink, path)  # registered before the file exists
    await trio.to_thread.run_sync(lambda: runner.host.write_file(path, data, mode=mode, uid=uid, gid=gid))
    return path


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _shielded(fn: object, *args: object) -> None:
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(fn, *args)  # type: ignore[arg-type]


def _inside(tree: Path, source: str, ref: str | None) -> Path:
    where = f"'{ref}'" if ref is not None else "the build context"
    normal = posixpath.normpath(source.lstrip("/") or ".")
    if ref is None and (normal == ".." or normal.startswith("../")):
        raise MountFailed(f"error: RUN --mount source '{source}': forbidden path outside the build context")
    try:
        path = resolve_in_root(tree, source)
    except PathEscape as exc:
        raise MountFailed(f"error: RUN --mount source '{source}': {exc}") from None
    if not path.exists():
        raise MountFailed(f"error: RUN --mount source '{source}' not found in {where}")
    return path


def stub_targets(targets: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The targets kleened creates itself (runc makes those in /dev, /proc and /sys)."""
    return [(t, d) for t, d in targets if not t.startswith(RUNC_OWNED)]
