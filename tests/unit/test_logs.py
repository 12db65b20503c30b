"""The container log: record format, rotation, readers (tail, since, follow across rotation)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from kleene_protocol.models import LogsConfig
from kleened.core.errors import InvalidArgument
from kleened.core.fanout import Stream
from kleened.core.logfiles import CONTENT, Renderer, Selection, encode, generations, log_path
from kleened.core.logs import ContainerLog, LogGone, Logs
from kleened.core.stamps import Stamper, parse_time, stamp

STAMP = b"2024-05-01T12:00:00.000000001Z"


def demux(frames: list[bytes]) -> dict[int, bytes]:
    out = {1: b"", 2: b""}
    for frame in frames:
        out[frame[0]] += frame[1:]
    return out


chunks = st.lists(st.tuples(st.sampled_from([Stream.STDOUT, Stream.STDERR]),
                            st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" in b or len(b) < 50)),
                  max_size=30)


@given(chunks)
@settings(max_examples=200)
def test_records_give_back_every_byte_of_each_stream(items):
    block = b"".join(encode(STAMP, stream, data) for stream, data in items)
    assert all(len(line) >= CONTENT for line in block.split(b"\n")[:-1])
    got = demux(Renderer(Selection()).frames(block))
    for stream in (Stream.STDOUT, Stream.STDERR):
        assert got[stream] == b"".join(d for s, d in items if s == stream)


def test_record_format_is_cri():
    assert encode(STAMP, Stream.STDOUT, b"a\nb\npart") == (
        STAMP + b" stdout F a\n" + STAMP + b" stdout F b\n" + STAMP + b" stdout P part\n")
    assert encode(STAMP, Stream.STDERR, b"\n") == STAMP + b" stderr F \n"


def test_timestamps_once_per_line_even_when_it_came_in_parts():
    later = STAMP.replace(b"001Z", b"002Z")
    block = encode(STAMP, Stream.STDOUT, b"hel") + encode(later, Stream.STDOUT, b"lo\nnext\n")
    got = demux(Renderer(Selection(timestamps=True)).frames(block))[1]
    assert got == STAMP + b" hello\n" + later + b" next\n"


def test_stamps_are_fixed_width_and_sort_like_time():
    stamper = Stamper()
    stamps = [stamper.stamp(ns) for ns in (0, 1, 999_999_999, 10**9, 1_714_564_800 * 10**9 + 5)]
    assert all(len(s) == 30 for s in stamps)
    assert stamps == sorted(stamps)
    assert stamps[-1] == b"2024-05-01T12:00:00.000000005Z"


@pytest.mark.parametrize(("spec", "ns"), [
    ("", None), (1714564800, 1714564800 * 10**9), ("1714564800.5", 1714564800 * 10**9 + 5 * 10**8),
    ("2024-05-01T12:00:00Z", 1714564800 * 10**9), ("2024-05-01T12:00:00.000000007Z", 1714564800 * 10**9 + 7),
    ("2024-05-01T14:00:00.25+02:00", 1714564800 * 10**9 + 25 * 10**7),
])
def test_time_specs(spec, ns):
    assert parse_time(spec, "since") == ns


def test_bad_time_spec_names_the_rule():
    with pytest.raises(InvalidArgument, match="invalid since 'yesterday'"):
        parse_time("yesterday", "since")


def write_all(log: ContainerLog, items: list[tuple[Stream, bytes]]) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_closed)
            for stream, data in items:
                await log.wait_writable()
                log.record(stream, data)
                await trio.lowlevel.checkpoint()
            log.close()

    trio.run(main)


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


def lines(start: int, stop: int) -> bytes:
    return b"".join(b"line %05d\n" % i for i in range(start, stop))


def test_rotation_bounds_every_file_and_keeps_the_newest(tmp_path: Path):
    logs = Logs(tmp_path, max_size=4096, max_files=3, buffer=65536)
    write_all(logs.open("c1"), [(Stream.STDOUT, b"line %05d\n" % i) for i in range(2000)])
    gens = generations(tmp_path / "c1")
    assert len(gens) == 3 and gens[-1] > 3
    assert all(0 < log_path(tmp_path / "c1", g).stat().st_size <= 4096 for g in gens)
    kept = read_all(logs, "c1")
    assert kept.endswith(lines(1990, 2000)) and lines(0, 2000).endswith(kept)
    assert read_all(logs, "c1", tail=5) == lines(1995, 2000)


def test_logs_of_several_runs_accumulate_and_a_torn_record_is_skipped(tmp_path: Path):
    logs = Logs(tmp_path)
    write_all(logs.open("c1"), [(Stream.STDOUT, lines(0, 3))])
    with open(log_path(tmp_path / "c1", 1), "ab") as f:
        f.write(STAMP + b" std")  # a crash in the middle of a write
    write_all(logs.open("c1"), [(Stream.STDERR, b"second run\n"), (Stream.STDOUT, lines(3, 5))])
    assert read_all(logs, "c1") == lines(0, 5)
    assert read_all(logs, "c1", stream=2, stdout=False, stderr=True, tail=1) == b"second run\n"
    assert read_all(logs, "c1", stream=1, stdout=False, stderr=True) == b""
    assert read_all(logs, "c1", tail=0) == b""


def test_since_until_and_stream_selection(tmp_path: Path):
    logs = Logs(tmp_path)
    directory = tmp_path / "c1"
    directory.mkdir()
    t = 1714564800 * 10**9
    log_path(directory, 1).write_bytes(b"".join(encode(stamp(t + i * 10**9), Stream.STDOUT, b"s%d\n" % i)
                                                for i in range(10)))
    assert read_all(logs, "c1", since=f"{(t + 7 * 10**9) / 1e9}") == b"s7\ns8\ns9\n"
    assert read_all(logs, "c1", until="2024-05-01T12:00:01Z") == b"s0\ns1\n"
    assert read_all(logs, "c1", since="2024-05-01T12:00:03Z", tail=2) == b"s8\ns9\n"
    with pytest.raises(InvalidArgument):
        logs.stream("c1", LogsConfig(stdout=False, stderr=False))


async def until(condition, timeout: float = 30) -> None:
    """Poll `condition` on the event loop until it holds (fails after `timeout` seconds)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.001)


def test_follower_survives_rotation_and_sees_the_end(tmp_path: Path):
    logs = Logs(tmp_path, max_size=4096, max_files=2, buffer=65536)
    total = 3000

    async def main() -> bytes:
        log = logs.open("c1")
        got = []
        read = [0]  # stdout bytes the follower has
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_closed)
            reader = logs.stream("c1", LogsConfig(follow=True))
            await reader.open()

            async def produce() -> None:
                for i in range(total):
                    log.record(Stream.STDOUT, b"line %05d\n" % i)
                    if i % 20 == 19:  # the follower keeps up: the next burst waits for it
                        await until(lambda i=i: read[0] >= (i + 1) * 11)
                log.close()

            nursery.start_soon(produce)
            while frames := await reader.read():
                got += frames
                read[0] += sum(len(f) - 1 for f in frames if f[0] == 1)
            reader.close()
        return demux(got)[1]

    assert trio.run(main) == lines(0, total)
    assert len(generations(tmp_path / "c1")) == 2


def test_a_follower_that_falls_behind_the_retained_files_is_told(tmp_path: Path):
    logs = Logs(tmp_path, max_size=4096, max_files=2, buffer=65536)
    write_all(logs.open("c1"), [(Stream.STDOUT, lines(0, 100))])

    async def main() -> None:
        log = logs.open("c1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_closed)
            reader = logs.stream("c1", LogsConfig(follow=True))
            await reader.open()
            first = await reader.read()  # the reader now holds generation 1 open...
            assert first
            for i in range(3000):  # ...while the writer rotates far past it
                log.record(Stream.STDOUT, b"line %05d\n" % i)
            await log.sync()
            with pytest.raises(LogGone):
                while await reader.read():
                    pass
            reader.close()
            log.close()

    trio.run(main)


def test_pending_output_is_bounded_and_a_failing_disk_drops_instead_of_blocking(tmp_path: Path):
    log = Logs(tmp_path, buffer=65536).open("c1")

    def broken(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    log._write = broken  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.write_until_closed)
            for _ in range(100):
                await log.wait_writable()
                log.record(Stream.STDOUT, b"x" * 8192 + b"\n")
                assert log.statistics()["pending_bytes"] <= 65536 + 8192 + 100
            log.close()

    trio.run(main)
    assert log.dropped_bytes > 100 * 8192 and log.ended


def test_recent_lines(tmp_path: Path):
    log = Logs(tmp_path, recent=64).open("c1")
    for data in (b"a\nb\n", b"c\nd", b"d\ne\n"):
        log.record(Stream.STDOUT, data)
    assert b"".join(d for _, d in log.recent_lines(2)) == b"dd\ne\n"
    assert b"".join(d for _, d in log.recent_lines(3)) == b"c\ndd\ne\n"
    assert log.recent_lines(0) == []
    for _ in range(20):
        log.record(Stream.STDERR, b"0123456789\n")
    assert sum(len(d) for _, d in log.recent_lines(1000)) <= 64 + 11
    log.abandon()
    assert os.listdir(tmp_path / "c1") == ["00000001.log"]


@given(chunks, st.booleans(), st.sampled_from([{Stream.STDOUT}, {Stream.STDERR}, {Stream.STDOUT, Stream.STDERR}]))
@settings(max_examples=200)
def test_the_fast_path_renders_as_the_record_loop(items, timestamps, streams):
    block = b"".join(encode(STAMP, stream, data) for stream, data in items)
    selection = Selection(streams=frozenset(streams), timestamps=timestamps)
    records = block.split(b"\n")[:-1]
    assert demux(Renderer(selection).frames(block)) == demux(Renderer(selection)._slow_frames(records))
