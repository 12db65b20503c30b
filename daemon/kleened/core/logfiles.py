"""The on-disk container log: its file format, its files, and reading them (no trio here).

Format (the CRI log format, which kubelet and `crictl logs` read): one record per line,
`<stamp> <stream> <tag> <content>\\n`, where `stamp` is the 30-byte UTC stamp of the chunk the
line came in (see `stamps`), `stream` is `stdout` or `stderr` (a TTY's single stream is
`stdout`), and `tag` is `F` for a full line or `P` for a part of a line that the process had
not finished when the chunk was read (its next part follows in a later record). Every field
has a fixed width, so the content always starts at byte 40 and a record parses by slicing.
Why not JSON: encoding is one `bytes.replace` per chunk (C speed, no per-line Python), the
files are greppable, and binary output stays byte-exact.

Files: `<dir>/<generation>.log`, generation counting up from 1 per container. The newest is
the one written; rotating starts the next generation and deletes those older than the
`max_files` newest. A reader holds an open fd on its file, so rotation never pulls a file
from under it, and it moves to generation g+1 only once that exists (g is then complete).

The monitor (conmon) writes the same format with a 35-byte stamp, local time with an offset
(`...976+00:00`, UTC as the daemon runs it) where kleened writes `...976Z`: byte 29 tells the
two apart (`shift_of`), the content of a conmon record starts 5 bytes later, and stamps compare
on their first 29 bytes (date, time, nanoseconds), which are alike in both.

A monitor writes `<dir>/live.log`, the generation after the highest numbered one; the daemon
rotates it by renaming it to that number (the monitor writes on through its fd until it reads
the reopen command, then makes a new `live.log`), so a reader holding the file's fd reads on
and finds the next generation at the live path.

Vocabulary: a *position* is (generation, byte offset) of a record start; a *block* is a run of
complete records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .fanout import Stream

CONTENT = 40  # offset of the content in a record kleened wrote
STAMP_CMP = 29  # stamp bytes that compare alike in both forms (up to the nanoseconds)
MONITOR_SHIFT = 5  # a conmon stamp (`+00:00`) is this much longer than kleened's (`Z`)
READ_BLOCK = 256 * 1024  # bytes per read: more than any record (a chunk is at most 64 KiB)
FRAME_MAX = 64 * 1024  # payload bytes per output frame
STREAM_NAMES = {Stream.STDOUT: b"stdout", Stream.STDERR: b"stderr"}
_BY_NAME = {b"stdout": Stream.STDOUT, b"stderr": Stream.STDERR}


class LogGone(Exception):
    """A reader's next file was rotated away before it got there: it fell too far behind."""


def encode(stamp: bytes, stream: Stream, data: bytes) -> bytes:
    """The records of one chunk: full lines, then the unfinished rest as a `P` record."""
    head = stamp + b" " + STREAM_NAMES[stream] + b" "
    full, newline, rest = data.rpartition(b"\n")
    out = b""
    if newline:
        head_f = head + b"F "
        out = head_f + full.replace(b"\n", b"\n" + head_f) + b"\n"
    if rest:
        out += head + b"P " + rest + b"\n"
    return out


def shift_of(record: bytes) -> int:
    """How much later than in kleened's own records the fields of `record` start."""
    return MONITOR_SHIFT if record[STAMP_CMP:STAMP_CMP + 1] == b"+" else 0


def utc_stamp(record: bytes, shift: int) -> bytes:
    """The record's stamp in kleened's 30-byte form (what `timestamps` shows)."""
    return record[:30] if not shift else record[:STAMP_CMP] + b"Z"


LIVE = "live.log"  # the file a monitor writes: the newest generation


def numbered_path(directory: Path, generation: int) -> Path:
    return directory / f"{generation:08d}.log"


def log_path(directory: Path, generation: int) -> Path:
    """Where `generation` is: its numbered file, or the live file when that is this generation."""
    path = numbered_path(directory, generation)
    if not path.exists() and (directory / LIVE).exists() and generation == _last_numbered(directory) + 1:
        return directory / LIVE
    return path


def _numbered(directory: Path) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())


def _last_numbered(directory: Path) -> int:
    return max(_numbered(directory), default=0)


def generations(directory: Path) -> list[int]:
    """The generations on disk, oldest first (the live file, if any, is the last)."""
    gens = _numbered(directory)
    if (directory / LIVE).exists():
        gens.append(max(gens, default=0) + 1)
    return gens


def open_generation(directory: Path, generation: int) -> int | None:
    """An fd reading `generation`, or None when it is not on disk.

    The live file may be renamed to its number between our look and our open (a rotation), and
    a new live file made: the open of the live path is checked against the numbered file.
    """
    path = log_path(directory, generation)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        path = numbered_path(directory, generation)  # rotated meanwhile
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
    if path.name == LIVE:
        try:
            numbered = os.stat(numbered_path(directory, generation))
        except FileNotFoundError:
            return fd  # not rotated: the live file is this generation
        if numbered.st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            return open_generation(directory, generation)
    return fd


def rotated_away(directory: Path, generation: int) -> bool:
    """Whether a missing `generation` was deleted by rotation rather than not made yet.

    A later numbered generation means this one was made (generations are made in order and a
    number is only given by renaming the live file); if it is still missing after that was seen,
    it is gone for good. Comparing with the live file instead would misread a rotation in
    flight: between the rename of the live file and the monitor's new one, the next generation
    is missing and then appears.
    """
    if not any(n > generation for n in _numbered(directory)):
        return False
    return not log_path(directory, generation).exists()


@dataclass
class Selection:
    """What a reader wants: streams, a time window (as stamps, compared bytewise), stamps shown."""

    streams: frozenset[Stream] = frozenset({Stream.STDOUT, Stream.STDERR})
    since: bytes | None = None
    until: bytes | None = None
    timestamps: bool = False

    def wants(self, record: bytes, shift: int = 0) -> bool:
        if len(record) < CONTENT + shift or _BY_NAME.get(record[31 + shift:37 + shift]) not in self.streams:
            return False  # a malformed record (a torn write after a crash) is skipped too
        return not self.before(record) and not self.after(record)

    def before(self, record: bytes) -> bool:
        """Whether the record is older than `since`."""
        return self.since is not None and record[:STAMP_CMP] < self.since[:STAMP_CMP]

    def after(self, record: bytes) -> bool:
        """Whether the record is newer than `until`."""
        return self.until is not None and record[:STAMP_CMP] > self.until[:STAMP_CMP]


@dataclass
class Renderer:
    """Turns blocks of records into output frames: one stream byte, then up to 64 KiB of output.

    With `timestamps`, each output line starts with its stamp and a space (a line continued
    over several `P` records gets one stamp, its first).
    """

    selection: Selection
    _line_start: dict[bytes, bool] = field(default_factory=lambda: {b"stdout": True, b"stderr": True})
    past_until: bool = False

    def frames(self, block: bytes) -> list[bytes]:
        records = block.split(b"\n")
        records.pop()  # what follows the last newline: nothing
        fast = self._fast_frames(records)
        return fast if fast is not None else self._slow_frames(records)

    def _fast_frames(self, records: list[bytes]) -> list[bytes] | None:
        """The common block: full lines of one selected stream, all inside the time window.

        One set of header slices checks that (C speed, about 4x the per-record loop).
        """
        selection = self.selection
        if not records:
            return None
        shift = shift_of(records[0])
        kinds = {record[STAMP_CMP:40 + shift] for record in records}  # the stamp's end, stream, tag
        if len(kinds) != 1:
            return None
        kind = kinds.pop()[1 + shift:]
        stream = _BY_NAME.get(kind[1:7])
        if kind[7:] != b" F " or stream not in selection.streams:
            return None
        if selection.before(records[0]) or selection.after(records[-1]):
            return None
        if selection.timestamps:
            if not self._line_start[kind[1:7]]:
                return None
            if shift:
                text = b"\n".join([record[:STAMP_CMP] + b"Z" + record[39 + shift:] for record in records]) + b"\n"
            else:
                text = b"\n".join([record[:30] + record[39:] for record in records]) + b"\n"
        else:
            content = CONTENT + shift
            text = b"\n".join([record[content:] for record in records]) + b"\n"
        tag = bytes((stream,))
        return [tag + text[i:i + FRAME_MAX] for i in range(0, len(text), FRAME_MAX)]

    def _slow_frames(self, records: list[bytes]) -> list[bytes]:
        selection = self.selection
        frames: list[bytes] = []
        current: list[bytes] = [b""]
        size = 0
        for record in records:
            shift = shift_of(record)
            if selection.after(record) and len(record) >= CONTENT + shift:
                self.past_until = True
                break
            if not selection.wants(record, shift):
                continue
            name = record[31 + shift:37 + shift]
            full = record[38 + shift:39 + shift] == b"F"
            content = record[CONTENT + shift:]
            text = content + b"\n" if full else content
            if selection.timestamps:
                if self._line_start[name]:
                    text = utc_stamp(record, shift) + b" " + text
                self._line_start[name] = full
            tag = b"\x01" if name == b"stdout" else b"\x02"
            if current[0] != tag or size + len(text) > FRAME_MAX:
                if size:
                    frames.append(b"".join(current))
                current, size = [tag], 0
            current.append(text)
            size += len(text)
        if size:
            frames.append(b"".join(current))
        return frames


class Cursor:
    """Reads blocks of complete records forward from a position, across generations."""

    def __init__(self, directory: Path, generation: int, offset: int) -> None:
        self._dir = directory
        self.generation = generation
        self.offset = offset
        self._fd: int | None = None

    def _open(self) -> int | None:
        if self._fd is None:
            self._fd = open_generation(self._dir, self.generation)
        return self._fd

    def read_block(self) -> bytes:
        """The next complete records; b"" when there is nothing more for now. Raises LogGone."""
        while True:
            fd = self._open()
            if fd is None:
                if rotated_away(self._dir, self.generation):
                    raise LogGone(f"generation {self.generation} was rotated away")
                return b""  # no log yet
            data = os.pread(fd, READ_BLOCK, self.offset)
            cut = data.rfind(b"\n") + 1  # an unfinished record (a write in flight) is read later
            if cut:
                self.offset += cut
                return data[:cut]
            if not log_path(self._dir, self.generation + 1).exists():
                if rotated_away(self._dir, self.generation + 1):
                    raise LogGone(f"generation {self.generation + 1} was rotated away")
                return b""
            # g+1 exists, so g is complete: read what was written between our read and the rotation.
            data = os.pread(fd, READ_BLOCK, self.offset)
            cut = data.rfind(b"\n") + 1
            if cut:
                self.offset += cut
                return data[:cut]
            self.close()
            self.generation, self.offset = self.generation + 1, 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def start_position(directory: Path, tail: int | None, selection: Selection) -> tuple[int, int]:
    """Where reading starts: the oldest record, or the start of the `tail`-th last line of the
    selected streams (a line is counted by its `F` record; an unfinished last line comes too)."""
    gens = generations(directory)
    if not gens:
        return 1, 0
    if selection.since is not None:
        gens = _skip_older(directory, gens, selection.since)
    if tail is None:
        return gens[0], 0
    wanted = tail + 1  # the position is just after the (tail+1)-th last full line
    for generation in reversed(gens):
        found, offset = _count_back(log_path(directory, generation), wanted, selection)
        if offset is not None:
            return generation, offset
        wanted -= found
    return gens[0], 0


def _skip_older(directory: Path, gens: list[int], since: bytes) -> list[int]:
    """Drop whole files whose last record is older than `since`."""
    for index, generation in enumerate(gens):
        last = _last_record(log_path(directory, generation))
        if last is None or last[:STAMP_CMP] >= since[:STAMP_CMP]:
            return gens[index:]
    return gens[-1:]


def _last_record(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - READ_BLOCK))
            data = f.read()
    except FileNotFoundError:
        return None
    lines = data.rstrip(b"\n").rsplit(b"\n", 1)
    return lines[-1] if lines and lines[-1] else None


def _count_back(path: Path, wanted: int, selection: Selection) -> tuple[int, int | None]:
    """Scan `path` backwards for the `wanted`-th last full line of the selected streams.

    Returns (full lines found, offset just after that line) or (found, None) when the file
    holds fewer.
    """
    found = 0
    try:
        f = open(path, "rb")  # noqa: SIM115  (the with below; a missing file is no error)
    except FileNotFoundError:
        return 0, None
    with f:
        end = f.seek(0, os.SEEK_END)
        carry = b""
        while end > 0:
            start = max(0, end - READ_BLOCK)
            f.seek(start)
            data = f.read(end - start) + carry
            first = data.find(b"\n") + 1 if start > 0 else 0  # a record cut by the block start waits
            carry, body = data[:first], data[first:]
            records = body.split(b"\n")[:-1]
            position = start + first + body.rfind(b"\n") + 1  # after the last complete record
            for record in reversed(records):
                shift = shift_of(record)
                if record[38 + shift:39 + shift] == b"F" and selection.wants(record, shift):
                    found += 1
                    if found == wanted:
                        return found, position
                position -= len(record) + 1
            end = start
    return found, None
