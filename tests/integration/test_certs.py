"""`kleened certs`: the files it writes, and a kleened using them that our klee and upstream klee
reach over mutual TLS with the flags it prints (verifying the server's name and address)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.compat.conftest import UPSTREAM_KLEE, run_upstream
from tests.conftest import require, require_root_runtime
from tests.daemon import ROOT, Daemon, running_daemon
from tests.tls import Certs, free_port

KLEE = [sys.executable, "-m", "klee"]


def kleened_certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kleened", "certs", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip


def klee(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
    return subprocess.run([*KLEE, "--host", host, *args], capture_output=True, text=True, env=environ, timeout=60)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_modes_and_extensions(tmp_path):
    result = kleened_certs(str(tmp_path / "c"), "--hostname", "kleene.example.org", "--ip", "192.0.2.7",
                           "--days", "30")  # fmt: skip
    assert result.returncode == 0, result.stderr
    directory = tmp_path / "c"
    modes = {path.name: path.stat().st_mode & 0o777 for path in directory.iterdir()}
    assert modes == {"ca.pem": 0o644, "ca-key.pem": 0o600, "server-cert.pem": 0o644, "server-key.pem": 0o600,
                     "client-cert.pem": 0o644, "client-key.pem": 0o600}  # fmt: skip
    ca, server, client = (load(directory / name) for name in ("ca.pem", "server-cert.pem", "client-cert.pem"))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kleene.example.org"} <= set(san.get_values_for_type(x509.DNSName))
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(ip) for ip in ("127.0.0.1", "::1", "192.0.2.7")
    }
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    for cert in (server, client):
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
    assert 29 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= 31
    # The printed snippet: the listener on the given address, and the klee flags and environment.
    assert '  - address: "https://192.0.2.7:8085"\n    tlscert: ' in result.stdout
    assert "    tlsverify: true\n" in result.stdout
    assert f"--tlscacert {directory}/ca.pem" in result.stdout
    assert "export KLEE_HOST=https://192.0.2.7:8085\n" in result.stdout
    assert f"export KLEE_TLS_KEY={directory}/client-key.pem\n" in result.stdout


def test_existing_files_are_kept_unless_forced(tmp_path):
    assert kleened_certs(str(tmp_path)).returncode == 0
    before = (tmp_path / "ca.pem").read_bytes()
    again = kleened_certs(str(tmp_path))
    assert again.returncode == 2 and "use --force" in again.stderr
    assert (tmp_path / "ca.pem").read_bytes() == before
    assert kleened_certs(str(tmp_path), "--force").returncode == 0
    assert (tmp_path / "ca.pem").read_bytes() != before
    assert (tmp_path / "server-key.pem").stat().st_mode & 0o777 == 0o600
    bad = kleened_certs(str(tmp_path / "x"), "--ip", "not-an-ip")
    assert bad.returncode == 2 and "not-an-ip" in bad.stderr and not (tmp_path / "x").exists()


def test_plain_kleened_still_parses_its_options():
    result = subprocess.run([sys.executable, "-m", "kleened", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "kleened certs DIR" in result.stdout


# --- a daemon using the certificates -------------------------------------------------------------


class Generated:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.flags = ["--tlsverify", "--tlscacert", str(directory / "ca.pem"), "--tlscert",
                      str(directory / "client-cert.pem"), "--tlskey", str(directory / "client-key.pem")]  # fmt: skip

    def host(self, address: str = "127.0.0.1") -> str:
        return f"https://{address}:{self.port}"


@pytest.fixture(scope="module")
def generated() -> Iterator[tuple[Daemon, Generated]]:
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-certs-") as tmp:
        directory = Path(tmp) / "certs"
        assert kleened_certs(str(directory)).returncode == 0
        certs = Generated(directory, free_port())
        listeners = [
            {"address": f"https://127.0.0.1:{certs.port}", "tlscert": str(directory / "server-cert.pem"),
             "tlskey": str(directory / "server-key.pem"), "tlscacert": str(directory / "ca.pem"), "tlsverify": True},
            {"address": f"https://[::1]:{certs.port}", "tlscert": str(directory / "server-cert.pem"),
             "tlskey": str(directory / "server-key.pem"), "tlscacert": str(directory / "ca.pem"), "tlsverify": True},
        ]  # fmt: skip
        with running_daemon(Path(tmp) / "d", listeners=listeners) as daemon:
            yield daemon, certs


@pytest.mark.parametrize("address", ["127.0.0.1", "[::1]", "localhost"])
def test_our_klee_over_mtls_verifies_the_server_name(generated, address):
    _, certs = generated
    result = klee(certs.host(address), *certs.flags, "volume", "ls")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["VOLUME", "NAME", "CREATED"]


def test_our_klee_through_the_printed_environment(generated):
    _, certs = generated
    d = certs.directory
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
    environ.update({"KLEE_HOST": certs.host(), "KLEE_TLS_VERIFY": "true", "KLEE_TLS_CACERT": str(d / "ca.pem"),
                    "KLEE_TLS_CERT": str(d / "client-cert.pem"),
                    "KLEE_TLS_KEY": str(d / "client-key.pem")})  # fmt: skip
    result = subprocess.run([*KLEE, "lsv", "-q"], capture_output=True, text=True, env=environ, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_certificate_from_another_ca_is_refused(generated, tmp_path):
    _, certs = generated
    other = Certs(tmp_path)  # trustme: a different CA
    result = klee(certs.host(), "--tlsverify", "--tlscacert", str(certs.directory / "ca.pem"),
                  "--tlscert", str(other.client_cert), "--tlskey", str(other.client_key), "lsv")  # fmt: skip
    assert result.returncode == 125
    assert result.stderr.startswith("unable to connect to kleened: ") and len(result.stderr.splitlines()) == 1
    missing = klee(certs.host(), "--tlsverify", "--tlscacert", str(certs.directory / "ca.pem"), "lsv")
    assert missing.returncode == 125 and "certificate required" in missing.stderr


def test_upstream_klee_with_the_generated_certificates(generated):
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    _, certs = generated
    result = run_upstream(certs.host(), *certs.flags, "volume", "ls")
    assert result.returncode == 0 and result.lines[0].split() == ["VOLUME", "NAME", "CREATED"], result
