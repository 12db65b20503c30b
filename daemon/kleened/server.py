"""Serving the API: one hypercorn (trio worker) server per listener, all in one nursery.

Each listener gets its own hypercorn Config because hypercorn shares one SSLContext between
all the binds of a Config, and listeners differ in certificates and client verification.

Two fixes the real client needs are installed by `install_hypercorn_patches` (see
`KleenedTCPServer`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import hypercorn.trio.run as hypercorn_run
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Updated
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from .config import Listener

log = logging.getLogger(__name__)


class KleenedTCPServer(TCPServer):
    """hypercorn's TCPServer with two fixes.

    1. TLS alerts: when a handshake fails (e.g. a client without the certificate `tlsverify`
       requires), trio turns the SSLError into BrokenResourceError *without sending the alert*
       queued in its outgoing BIO (python-trio/trio#3413), so clients see a bare disconnect
       instead of `tlsv13 alert certificate required`. We do the handshake eagerly and flush
       that alert ourselves. `_outgoing` is private to trio: trio is pinned and a test checks
       the client sees the alert.
    2. Keep-alive: quart-trio cancels its request scope right after the last body chunk, so
       hypercorn's idle-timer restart is lost and idle connections hold shutdown for the whole
       graceful timeout. Shielding the `Updated` event keeps the timer.
    """

    async def run(self) -> None:
        stream = self.stream
        if isinstance(stream, trio.SSLStream):
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                await self._send_alert_and_close(stream)
                return
        await super().run()

    @staticmethod
    async def _send_alert_and_close(stream: trio.SSLStream[Any]) -> None:
        outgoing = getattr(stream, "_outgoing", None)
        alert = outgoing.read() if outgoing is not None else b""
        transport = stream.transport_stream
        with trio.move_on_after(2):
            try:
                if alert:
                    await transport.send_all(alert)
                await transport.send_eof()  # a lingering close, so the peer reads the alert, not a RST
                while await transport.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("peer went away during the TLS alert", extra={"error": exc})
        await transport.aclose()

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, Updated):
            with trio.CancelScope(shield=True):
                return await super().protocol_send(event)
        return await super().protocol_send(event)


def install_hypercorn_patches() -> None:
    """hypercorn's worker looks `TCPServer` up at call time; swap in ours."""
    hypercorn_run.TCPServer = KleenedTCPServer  # type: ignore[misc]


WEBSOCKET_PING_INTERVAL = 20.0  # seconds


def hypercorn_config(listener: Listener, *, max_ws_message: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [listener.bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 3.0
    # Longer than clients keep idle connections (httpx: 5 s, klee's: less): a client must be the
    # one to drop an idle connection, or a request sent as the server drops it fails with
    # "server disconnected" (seen under load at 5 s on both sides).
    config.keep_alive_timeout = 75.0
    config.umask = 0o117  # unix sockets come out 0660
    # Pings both ways: clients ping us (hypercorn answers), and we ping every session so that a
    # client gone without a FIN (a host that vanished) fails a write and ends its session.
    config.websocket_ping_interval = WEBSOCKET_PING_INTERVAL
    config.websocket_max_message_size = max_ws_message
    if listener.tls:
        config.certfile = listener.certfile
        config.keyfile = listener.keyfile
        if listener.cafile:
            config.ca_certs = listener.cafile
        config.verify_mode = ssl.CERT_REQUIRED if listener.verify else ssl.CERT_NONE
        config.alpn_protocols = ["http/1.1"]
    return config


def remove_stale_socket(listener: Listener) -> None:
    """As upstream: an existing file or socket at a unix listener's path is replaced."""
    if listener.unix_path and os.path.lexists(listener.unix_path):
        os.unlink(listener.unix_path)


async def serve_all(
    app: Any,
    listeners: list[Listener],
    shutdown: trio.Event,
    *,
    max_ws_message: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    on_listening: Callable[[Listener], None] | None = None,
) -> None:
    """Serve `app` on every listener until `shutdown` is set; unlink unix sockets afterwards."""
    install_hypercorn_patches()
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                remove_stale_socket(listener)
                config = hypercorn_config(listener, max_ws_message=max_ws_message)
                await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
                if listener.unix_path:
                    os.chmod(listener.unix_path, 0o660)
                log.info("listening on %s", listener.describe())
                if on_listening:
                    on_listening(listener)
            task_status.started()
    finally:
        for listener in listeners:
            if listener.unix_path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(listener.unix_path)
