"""Opening the byte stream to kleened: unix socket or TCP, then TLS when the host says https."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ssl  # about 8 ms to import: only TLS hosts pay it (klee.connection.ssl_context)


class WireError(OSError):
    """kleened's answer broke HTTP or WebSocket, or the connection was lost mid-exchange.

    An OSError, as every other failure of the transport (refused, reset, TLS): callers map
    them all to one readable line."""


class Endpoint(NamedTuple):
    """Where kleened listens, as klee's `--host` names it."""

    unix_path: str | None = None
    host: str = "localhost"
    port: int = 80
    tls: ssl.SSLContext | None = None
    server_hostname: str = "localhost"

    @property
    def authority(self) -> str:
        """The Host header: `localhost` on a unix socket, as upstream klee sends."""
        if self.unix_path is not None:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def open_socket(endpoint: Endpoint, timeout: float) -> socket.socket:
    """A connected (and, for https, TLS-wrapped) socket; OSError and ssl.SSLError on failure."""
    if endpoint.unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(endpoint.unix_path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if endpoint.tls is None:
        return sock
    try:
        return endpoint.tls.wrap_socket(sock, server_hostname=endpoint.server_hostname)
    except BaseException:
        sock.close()
        raise
