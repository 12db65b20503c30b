"""Container logs: capturing a container's main process output to disk, and reading it back.

What is captured: from the moment a container starts, every chunk its main process (init)
writes to stdout or stderr, stamped when the daemon read it (see `logfiles` for the format).
Exec output is not part of the container log (as docker). Logs of all runs of a container
accumulate until it is removed, bounded by `max_size` bytes per file and `max_files` files.

Capture never lets the disk stall the container for long, and never loses a line: the pump
`record`s each chunk synchronously into a pending list (and a small ring of recent output for
attach), and one writer task per run writes whatever is pending as one batch in a worker
thread, so batches grow by themselves when the disk is slower than the process. The pump only
waits when `buffer` bytes are pending, which bounds memory. A write error (disk full) drops
that batch, counted in `dropped_bytes` and logged, rather than blocking the container.

When the runtime's monitor writes the file itself (conmon on Linux: the log goes on while the
daemon is away), the run's `ContainerLog` is *monitored*: `record` keeps only the recent ring
and wakes followers (the monitor writes a record to the file before it sends the same output
to the daemon), and nothing is written here; the daemon rotates the monitor's live file
(`_rotate_live`), see `logfiles` and docs/containers.md.

Readers (`LogStream`) read the files, never memory, so a reader that keeps up with the disk
loses nothing and a slow one costs no memory; one that falls behind the whole retained log
(its next file rotated away) ends with `LogGone`. Followers wake when the writer finishes a
batch; they see the end when the run's writer has written its last batch.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import trio

from kleene_protocol.models import LogsConfig

from .errors import InvalidArgument
from .fanout import Chunk, Stream
from .logfiles import (
    LIVE,
    Cursor,
    LogGone,
    Renderer,
    Selection,
    encode,
    generations,
    log_path,
    numbered_path,
    start_position,
)
from .stamps import Stamper, parse_time, stamp

log = logging.getLogger(__name__)

__all__ = ["ContainerLog", "LogGone", "LogStream", "Logs"]


class ContainerLog:
    """The log of one run of one container. The supervisor's pump calls `wait_writable` and
    `record`; its task runs `write_until_closed`; `close` ends it after the last chunk."""

    def __init__(self, directory: Path, *, max_size: int, max_files: int, buffer: int, recent: int,
                 threaded: bool = True, on_end: Callable[[ContainerLog], None] | None = None,
                 monitored: bool = False, reopen: Callable[[], bool] | None = None) -> None:
        self.directory = directory
        self.monitored = monitored
        self._max_size = max(4096, max_size)
        self._max_files = max(1, max_files)
        self._buffer = buffer
        self._threaded = threaded
        self._on_end = on_end
        self._stamper = Stamper()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._recorded = 0  # bytes handed to the writer, in total
        self._written = 0  # bytes the writer has finished with (written or dropped)
        self._recent: collections.deque[Chunk] = collections.deque()
        self._recent_bytes = 0
        self._recent_limit = recent
        self._work = trio.lowlevel.ParkingLot()
        self._space = trio.lowlevel.ParkingLot()
        self._changed = trio.lowlevel.ParkingLot()
        self.version = 0  # bumped after every batch and at the end: followers wait on it
        self.closed = False
        self.ended = False
        self.dropped_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        gens = generations(directory)
        self._gen = gens[-1] if gens else 1
        # The file written now: by the monitor (the live file, see `logfiles`), or by us.
        self.path = directory / LIVE if monitored else log_path(directory, self._gen)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        if self._size and _last_byte(self.path) != b"\n":
            self._size += os.write(self._fd, b"\n")  # end a record torn by a crash: it reads as malformed
        self.generation = self._gen
        # Monitored: `reopen` tells the monitor to start a new live file (False: it is gone).
        self.reopen = reopen
        self._unchecked = self._check_every = max(256, self._max_size // 16)  # bytes between size checks
        if monitored:
            os.close(self._fd)
            self._fd = -1

    # --- the pump's side (synchronous, on the event loop) --------------------------------------

    async def wait_writable(self) -> None:
        """Wait while `buffer` bytes are pending (the disk is behind): the pump then stops reading."""
        while self._pending_bytes >= self._buffer and not self.closed:
            await self._space.park()

    def record(self, stream: Stream, data: bytes) -> None:
        if self.monitored:  # already in the file: remember it for attach, wake the followers
            self._remember(stream, data)
            self._unchecked += len(data)
            if self._unchecked >= self._check_every:
                self._rotate_live()
            self._notify()
            return
        _ns, now = self._stamper.now()
        encoded = encode(now, stream, data)
        self._pending.append(encoded)
        self._pending_bytes += len(encoded)
        self._recorded += len(encoded)
        self._remember(stream, data)
        self._work.unpark_all()

    def _remember(self, stream: Stream, data: bytes) -> None:
        self._recent.append((stream, data))
        self._recent_bytes += len(data)
        while self._recent_bytes > self._recent_limit and len(self._recent) > 1:
            self._recent_bytes -= len(self._recent.popleft()[1])

    def recent_lines(self, count: int) -> list[Chunk]:
        """The chunks holding the last `count` lines of this run (the ring's whole content at most)."""
        if count <= 0 or not self._recent:
            return []
        need = count + (1 if self._recent[-1][1].endswith(b"\n") else 0)
        picked: list[Chunk] = []
        for stream, data in reversed(self._recent):
            newlines = data.count(b"\n")
            if newlines >= need:
                position = len(data)
                for _ in range(need):
                    position = data.rfind(b"\n", 0, position)
                if data[position + 1:]:
                    picked.append((stream, data[position + 1:]))
                break
            need -= newlines
            picked.append((stream, data))
        return picked[::-1]

    def close(self) -> None:
        """No more chunks: the writer writes what is pending, then the log ends."""
        self.closed = True
        self._work.unpark_all()
        self._space.unpark_all()

    def abandon(self) -> None:
        """The run never started: release the file without writing."""
        self.closed = True
        self._finish()

    # --- the writer ---------------------------------------------------------------------------

    async def write_until_closed(self) -> None:
        """Write pending chunks in batches until `close`; cancellation drops what is pending."""
        warned = False
        try:
            while True:
                while not self._pending and not self.closed:
                    await self._work.park()
                if not self._pending:
                    return
                batch = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._space.unpark_all()
                try:
                    if self._threaded:
                        await trio.to_thread.run_sync(self._write, batch)
                    else:
                        self._write(batch)
                except OSError as exc:
                    self.dropped_bytes += len(batch)
                    if not warned:
                        log.warning("could not write the container log, output is lost: %s", exc,
                                    extra={"log": str(self.directory)})
                        warned = True
                self._written += len(batch)
                self.generation = self._gen
                self._notify()
        finally:
            self._finish()

    def _finish(self) -> None:
        self.dropped_bytes += self._pending_bytes
        self._pending.clear()
        self._recent.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.ended = True
        self._notify()
        if self._on_end is not None:
            self._on_end(self)

    def _notify(self) -> None:
        self.version += 1
        self._changed.unpark_all()

    def _write(self, data: bytes) -> None:
        """Append `data`, rotating at record boundaries so no file exceeds `max_size` (a record
        longer than that gets a file of its own). Runs in a worker thread; it alone touches the
        fd, size and generation, one call at a time."""
        view = memoryview(data)
        position, end = 0, len(data)
        while position < end:
            room = self._max_size - self._size
            if end - position <= room:
                self._append(view[position:])
                return
            cut = data.rfind(b"\n", position, position + max(0, room)) + 1  # after the last record that fits
            if cut == 0:
                if self._size:
                    self._rotate()
                    continue
                cut = data.find(b"\n", position) + 1 or end  # one record longer than a file
            self._append(view[position:cut])
            position = cut
            if position < end:
                self._rotate()

    def _append(self, view: memoryview) -> None:
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def _rotate_live(self) -> None:
        """Rotate the monitor's live file once it reached `max_size`: rename it to its
        generation, have the monitor start a new one, drop generations beyond `max_files`.
        A few syscalls, on the event loop."""
        self._unchecked = 0
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return  # renamed, and the monitor has not made the next one yet
        if size < self._max_size or self.reopen is None:
            return
        generation = generations(self.directory)[-1]
        try:
            os.rename(self.path, numbered_path(self.directory, generation))
        except OSError as exc:
            log.warning("could not rotate the container log: %s", exc, extra={"log": str(self.directory)})
            return
        self.reopen()
        for old in generations(self.directory):
            if old <= generation + 1 - self._max_files:
                numbered_path(self.directory, old).unlink(missing_ok=True)
        self.generation = generation + 1

    def _rotate(self) -> None:
        new_gen = self._gen + 1
        fd = os.open(log_path(self.directory, new_gen), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        os.close(self._fd)
        self._fd, self._gen, self._size = fd, new_gen, 0
        for old in generations(self.directory):
            if old <= new_gen - self._max_files:
                log_path(self.directory, old).unlink(missing_ok=True)

    # --- readers' side ------------------------------------------------------------------------

    async def wait_changed(self, version: int) -> None:
        while self.version == version:
            await self._changed.park()

    async def sync(self) -> None:
        """Wait until everything recorded so far is on disk (or the log ended)."""
        target = self._recorded
        while self._written < target and not self.ended:
            await self._changed.park()

    def statistics(self) -> dict[str, int]:
        return {"pending_bytes": self._pending_bytes, "written_bytes": self._written,
                "dropped_bytes": self.dropped_bytes, "generation": self.generation}


class LogStream:
    """One reader of a container log: `read()` returns output frames until it returns []."""

    def __init__(self, directory: Path, live: ContainerLog | None, selection: Selection, *, tail: int | None,
                 follow: bool, until_ns: int | None) -> None:
        self._dir = directory
        self._live = live
        self._selection = selection
        self._tail = tail
        self._follow = follow and live is not None
        self._until_ns = until_ns
        self._renderer = Renderer(selection)
        self._cursor: Cursor | None = None
        self._stop: tuple[int, int] | None = None

    async def open(self) -> None:
        if self._live is not None:
            await self._live.sync()
        generation, offset = await trio.to_thread.run_sync(start_position, self._dir, self._tail, self._selection)
        self._cursor = Cursor(self._dir, generation, offset)
        if not self._follow:
            self._stop = await trio.to_thread.run_sync(_end_position, self._dir)

    async def read(self) -> list[bytes]:
        """The next frames (stream byte + output); [] at the end. Raises LogGone."""
        cursor = self._cursor
        assert cursor is not None, "open() first"
        while not self._renderer.past_until:
            if self._stop is not None and (cursor.generation, cursor.offset) >= self._stop:
                return []
            live = self._live
            version, ended = (live.version, live.ended) if live is not None else (0, True)
            block = await trio.to_thread.run_sync(cursor.read_block)
            if block:
                frames = self._renderer.frames(block)
                if frames:
                    return frames
                continue
            if not self._follow or ended or live is None:
                return []
            timeout = float("inf") if self._until_ns is None else (self._until_ns - time.time_ns()) / 1e9
            with trio.move_on_after(max(0.0, timeout)) as scope:
                await live.wait_changed(version)
            if scope.cancelled_caught:
                return []
        return []

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _end_position(directory: Path) -> tuple[int, int]:
    gens = generations(directory)
    if not gens:
        return 1, 0
    try:
        return gens[-1], log_path(directory, gens[-1]).stat().st_size
    except FileNotFoundError:
        return gens[-1], 0


class Logs:
    """Every container's log directory under `root` (`<root>/<container id>/`)."""

    def __init__(self, root: Path, *, max_size: int = 10 * 2**20, max_files: int = 5, buffer: int = 4 * 2**20,
                 recent: int = 64 * 1024, threaded: bool = True) -> None:
        self.root = root
        self._options = {"max_size": max_size, "max_files": max_files, "buffer": buffer, "recent": recent,
                         "threaded": threaded}
        self._live: dict[str, ContainerLog] = {}

    def directory(self, container_id: str) -> Path:
        return self.root / container_id

    def open(self, container_id: str, *, monitored: bool = False,
             reopen: Callable[[], bool] | None = None) -> ContainerLog:
        """The log of a run that starts now (or is adopted); its writer must then be run
        (`write_until_closed`). `monitored`: the runtime's monitor writes the file, and
        `reopen` makes it start a new one (rotation)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        container_log = ContainerLog(self.directory(container_id), on_end=self._ended, monitored=monitored,
                                     reopen=reopen, **self._options)  # type: ignore[arg-type]
        self._live[container_id] = container_log
        return container_log

    def _ended(self, container_log: ContainerLog) -> None:
        container_id = container_log.directory.name
        if self._live.get(container_id) is container_log:
            del self._live[container_id]

    def live(self, container_id: str) -> ContainerLog | None:
        return self._live.get(container_id)

    def stream(self, container_id: str, config: LogsConfig) -> LogStream:
        """A reader of `container_id`'s log as `config` asks; raises InvalidArgument. Call `open()`."""
        streams = frozenset(s for s, wanted in ((Stream.STDOUT, config.stdout), (Stream.STDERR, config.stderr))
                            if wanted)
        if not streams:
            raise InvalidArgument("select stdout, stderr or both")
        if config.tail is not None and config.tail < 0:
            raise InvalidArgument(f"invalid tail {config.tail}: use a number of lines >= 0, or null for all")
        since_ns, until_ns = parse_time(config.since, "since"), parse_time(config.until, "until")
        selection = Selection(streams=streams, since=None if since_ns is None else stamp(since_ns),
                              until=None if until_ns is None else stamp(until_ns), timestamps=config.timestamps)
        return LogStream(self.directory(container_id), self.live(container_id), selection, tail=config.tail,
                         follow=config.follow, until_ns=until_ns)

    def remove(self, container_id: str) -> None:
        """Delete a removed container's log files (they are plain files of ours, never mounts)."""
        directory = self.directory(container_id)
        if directory.is_dir():
            shutil.rmtree(directory)

    def reconcile(self, containers: set[str]) -> None:
        """At start: delete the logs of containers that no longer exist."""
        if not self.root.is_dir():
            return
        for name in os.listdir(self.root):
            if name not in containers:
                log.info("removing the log of a removed container", extra={"container": name})
                shutil.rmtree(self.root / name)
