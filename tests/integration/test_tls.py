"""TCP and unix listeners with TLS, with and without required client certificates."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_root_runtime
from tests.tls import TlsDaemon, client_context, running_tls_daemon


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsDaemon]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-tls-") as tmp, running_tls_daemon(Path(tmp)) as d:
        yield d


def test_mtls_with_a_client_certificate(tls):
    with httpx.Client(base_url=tls.mtls_host, verify=client_context(tls.certs, ca=tls.certs.ca)) as client:
        r = client.post("/volumes/create", json={"name": "tlsvol"})
        assert r.status_code == 201
        assert "tlsvol" in [v["name"] for v in client.get("/volumes/list").json()]
        assert client.delete("/volumes/tlsvol").status_code == 200


def test_client_without_certificate_sees_the_tls_alert(tls):
    # The alert must reach the client (trio drops it unless kleened flushes it): every time.
    for _ in range(5):
        with httpx.Client(base_url=tls.mtls_host, verify=client_context(ca=tls.certs.ca)) as client:
            with pytest.raises(httpx.TransportError) as err:
                client.get("/volumes/list")
            assert "certificate required" in str(err.value).lower()


def test_tls_on_a_unix_socket_without_client_verification(tls):
    ctx = client_context(ca=tls.certs.ca)
    transport = httpx.HTTPTransport(uds=str(tls.tls_socket), verify=ctx)
    with httpx.Client(transport=transport, base_url="https://localhost") as c:
        assert c.get("/volumes/list").status_code == 200
    assert tls.tls_socket.stat().st_mode & 0o777 == 0o660


def test_untrusted_server_is_refused_by_a_verifying_client(tls):
    with (
        httpx.Client(base_url=tls.mtls_host, verify=client_context(tls.certs)) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get("/volumes/list")
