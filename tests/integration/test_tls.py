"""TCP and unix listeners with TLS, with and without required client certificates."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon


def client_context(certs: Certs | None = None, *, ca: Path | None = None, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    if certs is not None and with_cert:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Certs:
    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1", "::1")
        client = ca.issue_cert("client")
        self.ca = directory / "ca.pem"
        self.server_cert = directory / "server-cert.pem"
        self.server_key = directory / "server-key.pem"
        self.client_cert = directory / "client-cert.pem"
        self.client_key = directory / "client-key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[tuple[Daemon, Certs, int]]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-tls-") as tmp:
        certs = Certs(Path(tmp))
        port = free_port()
        listeners = [
            {"address": f"https://127.0.0.1:{port}", "tlscert": str(certs.server_cert),
             "tlskey": str(certs.server_key), "tlscacert": str(certs.ca), "tlsverify": True},
            {"address": f"https://{tmp}/kleened.tlssock", "tlscert": str(certs.server_cert),
             "tlskey": str(certs.server_key)},
        ]
        with running_daemon(Path(tmp) / "d", listeners=listeners) as daemon:
            yield daemon, certs, port


def test_mtls_with_a_client_certificate(tls_daemon):
    _daemon, certs, port = tls_daemon
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=client_context(certs, ca=certs.ca)) as client:
        r = client.post("/volumes/create", json={"name": "tlsvol"})
        assert r.status_code == 201
        assert "tlsvol" in [v["name"] for v in client.get("/volumes/list").json()]
        assert client.delete("/volumes/tlsvol").status_code == 200


def test_client_without_certificate_sees_the_tls_alert(tls_daemon):
    _daemon, certs, port = tls_daemon
    for _ in range(3):
        ctx = client_context(ca=certs.ca)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx) as client:
            with pytest.raises(httpx.TransportError) as err:
                client.get("/volumes/list")
            assert "certificate required" in str(err.value).lower()


def test_tls_on_a_unix_socket_without_client_verification(tls_daemon):
    daemon, certs, _ = tls_daemon
    sock = daemon.workdir.parent / "kleened.tlssock"
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock), verify=ctx), base_url="https://localhost") as c:
        assert c.get("/volumes/list").status_code == 200
    assert sock.stat().st_mode & 0o777 == 0o660


def test_untrusted_server_is_refused_by_a_verifying_client(tls_daemon):
    _daemon, certs, port = tls_daemon
    with (
        httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=client_context(certs)) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get("/volumes/list")
