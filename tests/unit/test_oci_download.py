"""The thread side of a layer download: a blocking blob stream verified as it is read, the
worker-thread runner that a cancellation aborts (the thread never outlives the call), and a
401 in the thread answered from trio (against a stand-in registry speaking the transport's
blocking interface; the real registries are in tests/integration/oci)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import tarfile
import threading

import pytest
import trio

from kleened.core.oci.registry import Credentials, RegistryClient, RegistryError, _run_abortable
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


class _Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.url, self._headers = status, "http://registry.test/blob", headers
        self._pieces = [body]

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def read(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""

    def abort(self) -> None:
        self._pieces = []


class _Registry:
    """Answers blob GETs as a registry with basic auth would: 401 with a challenge, then the blob."""

    def __init__(self, blob: bytes, status: int = 200) -> None:
        self.blob, self.status = blob, status
        self.seen: list[str] = []

    @contextlib.contextmanager
    def blocking(self, method: str, url: str, *, headers: dict[str, str], follow_redirects: bool = False):
        self.seen.append(headers.get("Authorization", ""))
        if not headers.get("Authorization"):
            yield _Reply(401, b"", {"www-authenticate": 'Basic realm="test"'})
        elif self.status != 200:
            yield _Reply(self.status, b'{"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}', {})
        else:
            yield _Reply(200, self.blob, {})


def test_a_download_answers_a_401_from_trio_then_reads_in_the_thread():
    blob = b"layer bytes"
    registry = _Registry(blob)
    client = RegistryClient(registry, "http://registry.test", Credentials("tester", "pw"))  # type: ignore[arg-type]

    def consume(reply) -> tuple[bytes, bool]:
        return reply.read(), threading.current_thread() is not threading.main_thread()

    assert trio.run(client.download, "app", _digest(blob), consume) == (blob, True)
    assert registry.seen == ["", Credentials("tester", "pw").basic()]
    registry.status = 429
    with pytest.raises(RegistryError, match=r"HTTP 429.*slow down") as caught:
        trio.run(client.download, "app", _digest(blob), consume)
    assert caught.value.transient
