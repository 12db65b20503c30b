"""The thread side of a layer download: a blocking blob stream verified as it is read, and the
worker-thread runner that a cancellation aborts (the thread never outlives the call)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading

import pytest
import trio

from kleened.core.oci.registry import _run_abortable
from kleened.core.oci.unpack import ContentMismatch, VerifiedReader
from kleened.platform.oci_layers import TarLayerFiles
from tests.unit.test_oci import FakeWhiteouts


def _pieces(data: bytes, size: int):
    chunks = iter([data[i:i + size] for i in range(0, len(data), size)])
    return lambda: next(chunks, b"")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_verified_stream_passes_its_bytes_and_counts_them():
    data = bytes(range(256)) * 1000
    seen: list[int] = []
    reader = VerifiedReader(_pieces(data, 7000), _digest(data), len(data), seen.append)
    out = bytearray(reader.read(10))
    buffer = bytearray(5000)
    n = reader.readinto(buffer)
    out += buffer[:n]
    while piece := reader.read(65536):
        out += piece
    assert bytes(out) == data and seen[-1] == len(data) and seen == sorted(seen)
    assert reader.read(10) == b""
    assert VerifiedReader(_pieces(data, 4096), _digest(data), len(data)).read() == data  # read(): to the end


@pytest.mark.parametrize(("blob", "size", "message"), [
    (b"x" * 100, 99, "larger than announced"),
    (b"x" * 100, 101, "digest mismatch"),
    (b"y" * 100, 100, "digest mismatch"),
])
def test_a_blob_other_than_announced_is_refused(blob, size, message):
    reader = VerifiedReader(_pieces(blob, 30), _digest(b"x" * 100), size)
    with pytest.raises(ContentMismatch, match=message):
        while reader.read(64):
            pass


def test_a_layer_unpacks_in_the_thread_that_reads_it(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    blob = gzip.compress(raw.getvalue())
    files = TarLayerFiles(FakeWhiteouts())

    def unpack(dest, digest: str):  # in a worker thread of trio's, as a pull runs it
        dest.mkdir()
        return trio.run(trio.to_thread.run_sync, files.unpack_blocking, dest, "gzip",
                        VerifiedReader(_pieces(blob, 100), digest, len(blob)))

    unpacked = unpack(tmp_path / "good", _digest(blob))
    assert unpacked.diff_id == _digest(raw.getvalue()) and (tmp_path / "good/etc/hello").read_text() == "hello\n"
    with pytest.raises(ContentMismatch):  # the blob's digest is checked at its end, after extraction
        unpack(tmp_path / "bad", _digest(b"another blob"))


@pytest.mark.parametrize("jitter", range(20))  # bounded rounds: the cancellation lands at varying points
def test_a_cancelled_download_aborts_the_thread_and_waits_for_it(jitter):
    started, ended = threading.Event(), threading.Event()

    def blocked(aborter) -> str:
        release = threading.Event()
        started.set()
        try:
            with aborter.attached(release.set):
                if not release.wait(30):
                    return "not aborted"
                raise OSError("connection shut down")
        finally:
            ended.set()

    async def main() -> None:
        with trio.move_on_after(0.0005 * (jitter % 5)) as scope:
            await _run_abortable(blocked)
        assert scope.cancelled_caught  # the cancellation, not the thread's OSError
        assert ended.is_set() or not started.is_set()  # a thread that started has ended

    trio.run(main)


def test_a_download_returns_or_raises_what_the_thread_did():
    async def main() -> None:
        assert await _run_abortable(lambda aborter: 42) == 42
        with pytest.raises(ValueError, match="bad blob"):
            await _run_abortable(lambda aborter: (_ for _ in ()).throw(ValueError("bad blob")))

    trio.run(main)
