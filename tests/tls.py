"""TLS material and a kleened with TLS listeners, for tests: a CA, a server certificate for
localhost/127.0.0.1/::1 and a client certificate, made with trustme."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.daemon import Daemon, running_daemon


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


def client_context(certs: Certs | None = None, *, ca: Path | None = None) -> ssl.SSLContext:
    """A client context trusting `ca` (default: the system store), presenting `certs`' client cert."""
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    if certs is not None:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TlsDaemon:
    daemon: Daemon
    certs: Certs
    port: int  # TCP with TLS, client certificates required
    tls_socket: Path  # unix socket with TLS, no client verification

    @property
    def mtls_host(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_tls_daemon(workdir: Path) -> Iterator[TlsDaemon]:
    workdir.mkdir(parents=True, exist_ok=True)
    certs = Certs(workdir)
    port = free_port()
    tls_socket = workdir / "kleened.tlssock"
    listeners = [
        {"address": f"https://127.0.0.1:{port}", "tlscert": str(certs.server_cert),
         "tlskey": str(certs.server_key), "tlscacert": str(certs.ca), "tlsverify": True},
        {"address": f"https://{tls_socket}", "tlscert": str(certs.server_cert), "tlskey": str(certs.server_key)},
    ]
    with running_daemon(workdir / "d", listeners=listeners) as daemon:
        yield TlsDaemon(daemon, certs, port, tls_socket)
