"""Pure parts of the OCI support: references, short names and familiar names, documents and
platform selection, config mapping, auth challenges, credentials files, layer records and pins,
and layer tars to and from directories (with a stand-in whiteout form, so no root is needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from kleene_protocol import auth
from kleene_protocol.models import Image
from kleene_protocol.refs import InvalidReference, split_nametag
from kleened.core.oci import manifest as m
from kleened.core.oci.layers import LayerIndex, LayerPins, LayerRecord
from kleened.core.oci.reference import ReferenceError_, parse
from kleened.core.oci.registry import parse_challenge
from kleened.core.store import Store
from kleened.platform.oci_layers import TarLayerFiles
from kleened.platform.posix.tar import UnsafeArchive


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "familiar"), [
    ("busybox", "docker.io", "library/busybox", "latest", ("busybox", "latest")),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", ("busybox", "1.36")),
    ("docker.io/library/busybox", "docker.io", "library/busybox", "latest", ("busybox", "latest")),
    ("index.docker.io/foo/bar:x", "docker.io", "foo/bar", "x", ("foo/bar", "x")),
    ("quay.io/foo/bar", "quay.io", "foo/bar", "latest", ("quay.io/foo/bar", "latest")),
    ("127.0.0.1:5000/app:1", "127.0.0.1:5000", "app", "1", ("127.0.0.1:5000/app", "1")),
    ("localhost/app", "localhost", "app", "latest", ("localhost/app", "latest")),
])
def test_references_resolve_as_docker_does(text, registry, repository, tag, familiar):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.familiar() == familiar
    assert parse(str(ref)) == ref


def test_digests_and_a_default_registry():
    digest = "sha256:" + "a" * 64
    ref = parse(f"busybox@{digest}")
    assert (ref.tag, ref.digest, ref.target) == ("", digest, digest)
    mirror = parse("busybox", "127.0.0.1:5000")
    assert (mirror.registry, mirror.repository) == ("127.0.0.1:5000", "busybox")
    assert mirror.familiar("127.0.0.1:5000") == ("busybox", "latest")
    assert parse("docker.io/x").endpoint == "registry-1.docker.io"


@pytest.mark.parametrize("text", ["", "a/UPPER", "a//b", "busybox@sha256:short", "x:bad tag", "-a", "a:" + "t" * 200,
                                  "a\n", "a:v1\n", "reg.local:5000\n/a", "busybox@sha256:" + "a" * 64 + "\n"])
def test_bad_references_are_one_line_errors(text):
    with pytest.raises(ReferenceError_):
        parse(text)


@given(st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}(:[a-z0-9]{1,8})?", fullmatch=True))
def test_reference_round_trip(text):
    ref = parse(text)
    assert parse(str(ref)) == ref
    name, tag = ref.familiar()
    assert parse(f"{name}:{tag}") == ref


def test_local_names_with_a_registry_port():
    assert split_nametag("127.0.0.1:5000/app:1") == ("127.0.0.1:5000/app", "1")
    assert split_nametag("127.0.0.1:5000/app") == ("127.0.0.1:5000/app", "latest")
    assert split_nametag("FreeBSD:13.2") == ("FreeBSD", "13.2")
    for bad in ("a:b:c", "h:1/x:y:z", "x/y:a/b"):
        with pytest.raises(InvalidReference):
            split_nametag(bad)


def _index(*platforms: tuple[str, str, str]) -> m.Document:
    entries = [m.Descriptor(mediaType=m.OCI_MANIFEST, digest="sha256:" + f"{i:x}" * 64, size=1,
                            platform=m.Platform(os=o, architecture=a, variant=v))
               for i, (o, a, v) in enumerate(platforms)]
    return m.Document(mediaType=m.OCI_INDEX, manifests=entries)


def test_platform_selection():
    index = _index(("linux", "arm", "v6"), ("linux", "arm", "v7"), ("linux", "arm64", ""), ("linux", "amd64", ""))
    assert m.select(index, m.parse_platform("linux/arm/v7")).platform.variant == "v7"
    assert m.select(index, m.parse_platform("linux/arm64/v8")).platform.architecture == "arm64"
    assert m.select(index, m.parse_platform("linux/amd64")).platform.architecture == "amd64"
    with pytest.raises(m.ManifestError, match="offers: linux/amd64, linux/arm/v6"):
        m.select(index, m.parse_platform("windows/amd64"))
    with pytest.raises(m.ManifestError):
        m.parse_platform("linux")


def test_documents_are_checked():
    with pytest.raises(m.ManifestError, match="schema version 1"):
        m.decode_document(b'{"schemaVersion": 1, "name": "x"}')
    with pytest.raises(m.ManifestError, match="invalid digest"):
        m.decode_document(b'{"schemaVersion": 2, "mediaType": "%s", "config": {"digest": "md5:x", "size": 1}, '
                          b'"layers": []}' % m.OCI_MANIFEST.encode())
    doc = m.decode_document(b'{"schemaVersion": 2, "manifests": []}', m.DOCKER_LIST)
    assert doc.mediaType == m.DOCKER_LIST


def test_config_maps_to_image_fields_and_back():
    raw = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
           "config": {"Env": ["A=1"], "Cmd": ["run"], "Entrypoint": ["/init"], "WorkingDir": "/srv", "User": "app",
                      "ExposedPorts": {"53/udp": {}, "80/tcp": {}}, "Labels": {"a": "b"}, "Volumes": {"/data": {}},
                      "StopSignal": "SIGINT", "Shell": ["/bin/bash", "-c"], "OnBuild": ["RUN x"],
                      "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000, "Retries": 5}}}
    fields = m.image_fields(m.decode_config(msgspec.json.encode(raw)))
    assert fields["exposed_ports"] == ["53/udp", "80/tcp"] and fields["workdir"] == "/srv"
    assert fields["healthcheck"].interval == 2.0 and fields["healthcheck"].retries == 5
    image = Image(id="a" * 12, name="", tag="", instructions=[], created="", dataset="", **fields)
    again = m.image_fields(m.ImageConfig(config=m.run_config(image)))
    assert {k: again[k] for k in fields if k not in ("os", "architecture")} == \
           {k: fields[k] for k in fields if k not in ("os", "architecture")}
    assert m.image_fields(m.ImageConfig())["user"] == "root"


def test_challenges():
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="registry",'
                                     'scope="repository:a/b:pull,push"')
    assert scheme == "bearer" and params["scope"] == "repository:a/b:pull,push"
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_credentials_files():
    empty = auth.decode(b"")
    stored = auth.store(empty, "https://index.docker.io/v1/", "u", "p:w")
    assert auth.lookup(stored, "docker.io") == ("u", "p:w")
    assert auth.lookup(auth.decode(auth.encode(stored)), "registry-1.docker.io") == ("u", "p:w")
    assert auth.lookup(auth.remove(stored, "docker.io"), "docker.io") is None
    with pytest.raises(ValueError, match="invalid credentials file"):
        auth.decode(b"[1]")


def test_layer_records_and_pins(tmp_path):
    existing = {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}
    index = LayerIndex(Store(tmp_path / "s.sqlite"), lambda layer: layer in existing)
    for layer in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"):
        index.put(LayerRecord(id=layer, diff_id="sha256:d"))
    assert index.find("sha256:d") == "aaaaaaaaaaaa"
    assert index.find("sha256:d", exclude=["aaaaaaaaaaaa"]) == "bbbbbbbbbbbb"
    assert index.find("sha256:d", exclude=existing) is None  # and the stale record went
    assert index.get("cccccccccccc") is None and index.reconcile() == []
    pins = LayerPins()
    with pins.holding() as pin:
        pin("x")
        with pins.holding() as inner:
            inner("x")
        assert pins.held() == {"x"}
    assert pins.held() == set()


class FakeWhiteouts:
    """Whiteouts as marker files (a form that needs no root), to test the tar plumbing alone."""

    def whiteout(self, path: str) -> None:
        Path(path).with_name(".fake-wh-" + Path(path).name).write_text("")

    def opaque(self, directory: str) -> None:
        (Path(directory) / ".fake-opaque").write_text("")

    def is_whiteout(self, st_: os.stat_result) -> bool:
        return False

    def is_opaque(self, directory: str) -> bool:
        return (Path(directory) / ".fake-opaque").exists()


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _chunks(data: bytes, size: int = 7):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_layers_unpack_with_whiteouts_and_pack_deterministically(tmp_path):
    raw = _tar([("etc", None), ("etc/f", b"x" * 5000), ("etc/.wh.gone", b""), ("opt/.wh..wh..opq", b""),
                ("opt/n", b"n"), ("a/.wh..wh.plnk", b"")])
    files = TarLayerFiles(FakeWhiteouts())

    async def main():
        dest = tmp_path / "layer"
        dest.mkdir()
        unpacked = await files.unpack(dest, "gzip", _chunks(gzip.compress(raw) + gzip.compress(b"")))
        assert unpacked.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert (dest / "etc/.fake-wh-gone").exists() and (dest / "opt/.fake-opaque").exists()
        assert not (dest / "etc/.wh.gone").exists()
        first, second = await files.measure(dest, "gzip"), await files.measure(dest, "gzip")
        assert first == second
        out = bytearray()
        async with files.pack(dest, "gzip") as chunks:
            async for chunk in chunks:
                out += chunk
        assert "sha256:" + hashlib.sha256(out).hexdigest() == first.digest and len(out) == first.size
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(bytes(out)))) as tar:
            assert "opt/.wh..wh..opq" in tar.getnames()
            assert all(info.uname == "" and info.mtime == int(info.mtime) for info in tar.getmembers())

    trio.run(main)


@pytest.mark.parametrize("name", ["etc/.wh..", "../.wh.x"])
def test_hostile_whiteouts_are_refused(tmp_path, name):
    files = TarLayerFiles(FakeWhiteouts())

    async def main():
        await files.unpack(tmp_path, "", _chunks(_tar([(name, b"")])))

    with pytest.raises(UnsafeArchive):
        trio.run(main)


def test_a_truncated_layer_is_an_error(tmp_path):
    files = TarLayerFiles(FakeWhiteouts())
    data = gzip.compress(_tar([("f", b"y" * 100_000)]))

    async def main():
        await files.unpack(tmp_path, "gzip", _chunks(data[: len(data) // 2], 4096))

    with pytest.raises(ValueError):
        trio.run(main)
    assert stat.S_ISDIR(os.stat(tmp_path).st_mode)


def test_the_httpcore_read_size_setting_still_exists():
    import httpcore

    from kleened.platform import registry_http

    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == registry_http.READ_SIZE
    assert httpcore.HTTP11Connection.READ_NUM_BYTES == registry_http.READ_SIZE
