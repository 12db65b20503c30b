"""Upstream klee over TLS: mTLS works; without a client certificate it prints upstream's text."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import UPSTREAM_KLEE, run_upstream
from tests.conftest import require, require_root_runtime
from tests.tls import TlsDaemon, running_tls_daemon


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsDaemon]:
    require_root_runtime()
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    with tempfile.TemporaryDirectory(prefix="kleened-ctls-") as tmp, running_tls_daemon(Path(tmp)) as d:
        yield d


def test_volumes_over_mtls(tls):
    c = tls.certs
    args = ["--tlsverify", "--tlscacert", str(c.ca), "--tlscert", str(c.client_cert), "--tlskey", str(c.client_key)]
    name = f"tv{secrets.token_hex(3)}"
    assert run_upstream(tls.mtls_host, *args, "volume", "create", name).lines == [name]
    assert name in run_upstream(tls.mtls_host, *args, "volume", "ls").stdout
    assert run_upstream(tls.mtls_host, *args, "volume", "rm", name).lines == [name]


def test_missing_client_certificate_prints_the_alert(tls):
    r = run_upstream(tls.mtls_host, "--tlsverify", "--tlscacert", str(tls.certs.ca), "volume", "ls")
    assert "unable to connect to kleened: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate " \
           "required" in r.stdout + r.stderr


def test_verifying_without_the_ca_fails_on_the_self_signed_chain(tls):
    c = tls.certs
    r = run_upstream(tls.mtls_host, "--tlsverify", "--tlscert", str(c.client_cert), "--tlskey", str(c.client_key),
                     "volume", "ls")
    assert "CERTIFICATE_VERIFY_FAILED" in r.stdout + r.stderr


def test_tls_unix_socket_without_verification(tls):
    r = run_upstream(f"https://{tls.tls_socket}", "volume", "ls")
    assert r.returncode == 0 and r.lines[0].split() == ["VOLUME", "NAME", "CREATED"]
