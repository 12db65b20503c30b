"""Logs a monitor writes (conmon): its 35-byte stamps, the live file and its rotation by rename.

A fake monitor stands in for conmon's file handling (it appends records to `live.log` and, on a
reopen, writes on to the file it has open until its next write, then makes a new `live.log`
through a temporary file and a rename, as conmon 2.1 does); the integration tests run the real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from kleene_protocol.models import LogsConfig
from kleened.core import logfiles
from kleened.core.fanout import Stream
from kleened.core.logfiles import LIVE, Renderer, Selection, encode, generations, log_path
from kleened.core.logs import Logs
from tests.unit.test_logs import until

KLEENED = b"2024-05-01T12:00:00.000000001Z"
CONMON = b"2024-05-01T12:00:00.000000001+00:00"


def demux(frames: list[bytes]) -> dict[int, bytes]:
    out = {1: b"", 2: b""}
    for frame in frames:
        out[frame[0]] += frame[1:]
    return out


chunks = st.lists(st.tuples(st.sampled_from([Stream.STDOUT, Stream.STDERR]),
                            st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" in b or len(b) < 50)),
                  max_size=30)


@given(chunks, st.booleans())
@settings(max_examples=200)
def test_conmon_records_render_as_kleened_records(items, timestamps):
    ours = b"".join(encode(KLEENED, stream, data) for stream, data in items)
    theirs = b"".join(encode(CONMON, stream, data) for stream, data in items)
    selection = Selection(timestamps=timestamps)
    assert Renderer(selection).frames(theirs) == Renderer(Selection(timestamps=timestamps)).frames(ours)


def test_stamps_of_both_forms_compare_and_show_alike(tmp_path: Path):
    logs = Logs(tmp_path)
    directory = tmp_path / "c1"
    directory.mkdir()
    log_path(directory, 1).write_bytes(encode(KLEENED, Stream.STDOUT, b"old run\n"))  # kleened wrote it
    later = CONMON.replace(b"12:00:00", b"12:00:05")
    (directory / LIVE).write_bytes(encode(later, Stream.STDOUT, b"new run\n") + encode(later, Stream.STDERR, b"e\n"))
    assert generations(directory) == [1, 2] and log_path(directory, 2) == directory / LIVE
    assert read_all(logs, "c1") == b"old run\nnew run\n"
    assert read_all(logs, "c1", since="2024-05-01T12:00:03Z") == b"new run\n"
    assert read_all(logs, "c1", until="2024-05-01T12:00:03Z") == b"old run\n"
    assert read_all(logs, "c1", tail=2) == b"new run\n"  # the last line (stderr) is the other one
    assert read_all(logs, "c1", stream=2, stdout=False) == b"e\n"
    assert read_all(logs, "c1", timestamps=True) == KLEENED + b" old run\n" + later[:29] + b"Z new run\n"


class FakeMonitor:
    """conmon's log file handling: append to the live file; a reopen takes effect at the next write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.reopen_asked = False

    def reopen(self) -> bool:
        self.reopen_asked = True
        return True

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)  # to the file it has open, renamed or not
        if self.reopen_asked:
            self.reopen_asked = False
            os.close(self.fd)
            tmp = self.path.with_name(self.path.name + ".tmp")
            self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.rename(tmp, self.path)


def test_a_follower_reads_every_line_across_rotations_of_the_live_file(tmp_path: Path):
    logs = Logs(tmp_path, max_size=4096, max_files=3, buffer=65536)
    total = 3000

    async def main() -> bytes:
        (tmp_path / "c1").mkdir(parents=True)
        monitor = FakeMonitor(tmp_path / "c1" / LIVE)
        log = logs.open("c1", monitored=True, reopen=monitor.reopen)
        assert log.path == monitor.path
        got = []
        read = [0]  # stdout bytes the follower has
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_closed)
            reader = logs.stream("c1", LogsConfig(follow=True))
            await reader.open()

            async def produce() -> None:
                for i in range(total):
                    data = b"line %05d\n" % i
                    monitor.write(encode(CONMON, Stream.STDOUT, data))  # the monitor writes first...
                    log.record(Stream.STDOUT, data)  # ...then the daemon's tap gets the output
                    if i % 20 == 19:  # the follower keeps up: the next burst waits for it
                        await until(lambda i=i: read[0] >= (i + 1) * 11)
                log.close()

            nursery.start_soon(produce)
            while frames := await reader.read():
                got += frames
                read[0] += sum(len(f) - 1 for f in frames if f[0] == 1)
            reader.close()
        return demux(got)[1]

    assert trio.run(main) == b"".join(b"line %05d\n" % i for i in range(total))
    directory = tmp_path / "c1"
    gens = generations(directory)
    assert len(gens) == 3 and gens[-1] > 10 and log_path(directory, gens[-1]).name == LIVE
    assert all(log_path(directory, g).stat().st_size <= 2 * 4096 for g in gens)
    assert read_all(logs, "c1", tail=2) == b"line 02998\nline 02999\n"


def test_a_monitored_log_writes_nothing_itself_and_keeps_recent_lines(tmp_path: Path):
    logs = Logs(tmp_path)

    async def main() -> None:
        log = logs.open("c1", monitored=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_closed)
            version = log.version
            log.record(Stream.STDOUT, b"a\nb\n")
            assert log.version > version  # followers wake
            assert log.recent_lines(1) == [(Stream.STDOUT, b"b\n")]
            await log.sync()  # nothing of ours to wait for
            log.close()
        assert log.ended

    trio.run(main)
    assert (tmp_path / "c1" / LIVE).read_bytes() == b""


def read_all(logs: Logs, container_id: str, stream: int = 1, **config) -> bytes:
    async def main() -> list[bytes]:
        reader = logs.stream(container_id, LogsConfig(**config))
        await reader.open()
        frames = []
        while batch := await reader.read():
            frames += batch
        reader.close()
        return frames

    return demux(trio.run(main))[stream]


def test_a_rotation_in_flight_is_not_a_lost_generation(tmp_path: Path, monkeypatch):
    """The live file was just renamed to its number and the monitor makes the next one while the
    reader looks: the reader waits for it and reads on, never reporting it rotated away."""
    directory = tmp_path / "c1"
    directory.mkdir()
    first = encode(CONMON, Stream.STDOUT, b"one\n")
    (directory / LIVE).write_bytes(first)
    cursor = logfiles.Cursor(directory, 1, 0)
    assert cursor.read_block() == first
    os.rename(directory / LIVE, logfiles.numbered_path(directory, 1))  # the daemon's rotation
    listed = logfiles._numbered

    def monitor_reopens_meanwhile(path: Path) -> list[int]:
        if not (path / LIVE).exists():
            (path / LIVE).write_bytes(encode(CONMON, Stream.STDOUT, b"two\n"))
        return listed(path)

    monkeypatch.setattr(logfiles, "_numbered", monitor_reopens_meanwhile)
    blocks = [cursor.read_block() for _ in range(2)]
    assert b"".join(blocks).endswith(b"two\n")
    assert cursor.generation == 2
    os.rename(directory / LIVE, logfiles.numbered_path(directory, 2))
    for old in (1, 2):
        os.unlink(logfiles.numbered_path(directory, old))
    logfiles.numbered_path(directory, 3).write_bytes(b"")
    with pytest.raises(logfiles.LogGone):  # a generation really deleted under a slow reader
        logfiles.Cursor(directory, 2, 0).read_block()
    cursor.close()
