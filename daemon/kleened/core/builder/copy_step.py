"""COPY and ADD: sources from the context, a stage or an image (`--from`), heredocs, and (ADD) URLs and archives.

The destination is relative to WORKDIR; a trailing `/` (or `.`, or `--parents`) makes it a directory, which several
sources need. Sources are found by the `BuildFiles` driver (`platform.posix.globbing`), `--exclude` patterns
leave entries out, `--chmod` sets modes, `--chown` owners (names from the image's /etc/passwd and /etc/group).
`--link` is accepted and copies the same way (kleened's layers are not rebased, so it changes nothing else).

ADD downloads `http(s)://` sources into the build's scratch directory (mode 0600 in the image, mtime from
Last-Modified), checks `--checksum=sha256:...`, and never extracts them; a local file source that is a tar archive
is extracted into the destination (`--unpack=false` keeps it a file).

Cache key: the expanded instruction and the content it copies: the context files' digest, the layer ids of a
stage or image, heredoc texts, and a download's sha256 (with `--checksum`, the checksum: a hit downloads nothing).
"""

from __future__ import annotations

import posixpath
import urllib.parse
from pathlib import Path

import trio

from kleene_protocol.dockerignore import parse as parse_ignore
from kleene_protocol.ids import new_id

from ...platform.base import CopyPlan
from .files import Add, Copy, is_url
from .instructions import Heredoc
from .steps import Stage, StepFailed, StepRunner

MAX_DOWNLOAD = 8 << 30  # bytes of one ADD <url>
DOWNLOAD_MODE = 0o600


async def copy(runner: StepRunner, stage: Stage, instr: Copy) -> str:
    downloads: list[Path] = []
    try:
        return await _copy(runner, stage, instr, downloads)
    finally:
        with trio.CancelScope(shield=True):
            for path in downloads:
                await trio.to_thread.run_sync(lambda p=path: p.unlink(missing_ok=True))


async def _copy(runner: StepRunner, stage: Stage, instr: Copy, downloads: list[Path]) -> str:
    keyword = instr.keyword
    dest = posixpath.normpath(posixpath.join(stage.workdir, instr.dest))
    into_dir = instr.dest.endswith("/") or posixpath.basename(instr.dest) in (".", "..") or instr.parents
    patterns = [s for s in instr.sources if isinstance(s, str)]
    urls = [s for s in patterns if is_url(s)] if isinstance(instr, Add) else []
    local = [s for s in patterns if s not in urls]
    excludes = parse_ignore("\n".join(instr.excludes)) if instr.excludes else None
    if isinstance(instr, Add) and instr.checksum and len(instr.sources) != 1:
        raise StepFailed("ADD failed: --checksum needs exactly one source")
    async with runner.source_tree(instr.from_) as (tree, ignore, tree_key):
        try:
            plan = await trio.to_thread.run_sync(
                lambda: runner.files.plan(tree, local, ignore, excludes=excludes, parents=instr.parents))
        except ValueError as exc:
            raise StepFailed(f"{keyword} failed: {exc}") from None
        for doc in instr.sources:
            if isinstance(doc, Heredoc):
                plan.add_inline(doc.name, doc.body.encode(errors="surrogateescape"))
        checksum = instr.checksum if isinstance(instr, Add) else None
        if urls and not checksum:
            await _download(runner, plan, urls, into_dir, None, downloads)
        if isinstance(instr, Add) and instr.unpack is not False:
            await trio.to_thread.run_sync(plan.unpack_archives)
        if len(plan) + (len(urls) if checksum else 0) > 1 and not into_dir:
            raise StepFailed(f"{keyword} failed: when copying more than one source, the destination must be a "
                             "directory and end with a /")
        key = None
        if runner.cache is not None:
            digest = tree_key if tree_key is not None else await trio.to_thread.run_sync(plan.digest)
            key = runner.key(stage, keyword, list(map(str, patterns)), dest, into_dir, instr.chown, instr.chmod,
                             instr.parents, list(instr.excludes), digest, checksum,
                             getattr(instr, "unpack", None))
            if await runner.reuse(stage, key):
                return await runner.snapshot(stage)
        if urls and checksum:
            await _download(runner, plan, urls, into_dir, checksum, downloads)
        await _apply(runner, stage, instr, plan, dest, into_dir)
    return await runner.commit(stage, key)


async def _apply(runner: StepRunner, stage: Stage, instr: Copy, plan: CopyPlan, dest: str, into_dir: bool) -> None:
    async with runner.containers.filesystem(stage.container_id, stage.layers) as rootfs:
        try:
            uid, gid = runner.owner(rootfs, instr.chown)
            chmod = instr.mode.apply if instr.mode is not None else None
            await trio.to_thread.run_sync(lambda: plan.apply(
                rootfs, dest, into_dir=into_dir, uid=uid, gid=gid, check=trio.from_thread.check_cancelled,
                chmod=chmod, chown=bool(instr.chown)))
        except ValueError as exc:
            raise StepFailed(f"{instr.keyword} failed: {exc}") from None


async def _download(runner: StepRunner, plan: CopyPlan, urls: list[str], into_dir: bool, checksum: str | None,
                    downloads: list[Path]) -> None:
    """Fetch each URL into the build's scratch directory and add it to `plan`; `downloads` gets each path before
    the file exists, for the caller to remove."""
    assert runner.host is not None, "this builder cannot download"
    for url in urls:
        name = url_file_name(url) if into_dir else "download"
        if not name:
            raise StepFailed(f"ADD failed: cannot name a file after '{url}': give a destination file name")
        path = await runner.scratch_dir() / f"download-{new_id()}"
        downloads.append(path)
        if not runner.quiet:
            await runner.emit(f"--> Downloading {url}\n")
        try:
            fetched = await runner.host.fetch(url, path, max_bytes=MAX_DOWNLOAD)
        except ValueError as exc:
            raise StepFailed(f"ADD failed: could not download {url}: {exc}") from None
        if checksum is not None and fetched.sha256 != checksum:
            raise StepFailed(f"ADD failed: checksum mismatch for {url}: expected {checksum}, got {fetched.sha256}")
        plan.add_file(name, Path(path), mode=DOWNLOAD_MODE, mtime=fetched.last_modified)


def url_file_name(url: str) -> str:
    """The file name Docker gives a download into a directory: the last component of the URL's path."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    name = posixpath.basename(path.rstrip("/"))
    return "" if name in ("", ".", "..") else name
