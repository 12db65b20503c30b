"""HTTP(S) to registries with httpx (on trio through anyio): `core.oci.interfaces.HttpTransport`.

One client per daemon, so connections are reused across the requests of a pull. TLS is
verified against the system's CAs plus an optional extra CA file (a private registry's);
plain HTTP is only ever used for the registries the daemon's config lists as insecure (core
builds those URLs). Redirects are followed only where asked (blob downloads, to the storage a
registry redirects to); httpx drops the Authorization header when a redirect leaves the host.
Every network failure becomes `TransportError`; one that a retry cannot fix (a certificate
that does not verify) is marked not transient.

Layer blobs are read from a worker thread (`blocking`, through a synchronous client with the
same TLS, timeouts and proxies): the thread that unpacks a layer reads its socket too, so the
event loop does not touch the bytes. `abort()` shuts the connection down from any thread, which
ends a read that waits (a cancelled pull).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import httpcore
import httpx

from kleened.platform.base import TransportError

CHUNK = 1 << 20
# httpcore reads a body 64 KiB at a time. Every read gives the GIL back and waits to take it
# again, behind the worker threads that unpack layers (up to the 5 ms switch interval): with
# 1 MiB reads a pull of large layers took half the time on a 2-core machine. A private class
# attribute (httpcore 1.0); `tests/unit/test_oci.py` checks that it still exists.
READ_SIZE = 1 << 20
for _connection in (httpcore.AsyncHTTP11Connection, httpcore.HTTP11Connection):
    if hasattr(_connection, "READ_NUM_BYTES"):
        _connection.READ_NUM_BYTES = READ_SIZE
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)  # per read: a stalled registry fails, a slow one doesn't
_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=16)


class _Reply:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.url = str(response.url)

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    async def read(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise ValueError(f"body larger than {limit} bytes")
        return bytes(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes(CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            raise TransportError(_describe(exc)) from None


class _BlockingReply:
    """A reply whose body a worker thread reads (`core.oci.interfaces.BlockingReply`)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.url = str(response.url)
        self._pieces = response.iter_bytes()  # no chunk size: the pieces as read, not copied again
        self._lock = threading.Lock()
        self._closed = False

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    def read(self) -> bytes:
        try:
            return next(self._pieces, b"")
        except httpx.HTTPError as exc:
            raise TransportError(_describe(exc)) from None

    def abort(self) -> None:
        """Shut the connection down (a dup of its socket: the reading thread keeps its objects)."""
        with self._lock:
            if self._closed:
                return
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with contextlib.suppress(OSError, ValueError):
                dup = socket.socket(fileno=os.dup(sock.fileno())) if sock is not None else None
                if dup is not None:
                    with dup:
                        dup.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._response.close()


class HttpxTransport:
    def __init__(self, ca_file: str | None = None) -> None:
        context = ssl.create_default_context()
        if ca_file:
            context.load_verify_locations(ca_file)
        self._client = httpx.AsyncClient(verify=context, timeout=_TIMEOUT, limits=_LIMITS, trust_env=True)
        self._blocking = httpx.Client(verify=context, timeout=_TIMEOUT, limits=_LIMITS, trust_env=True)

    async def aclose(self) -> None:
        await self._client.aclose()
        self._blocking.close()

    @contextlib.contextmanager
    def blocking(self, method: str, url: str, *, headers: dict[str, str],
                 follow_redirects: bool = False) -> Iterator[_BlockingReply]:
        """`request` for a worker thread (no body to send)."""
        request = self._blocking.build_request(method, url, headers=headers)
        try:
            response = self._blocking.send(request, stream=True, follow_redirects=follow_redirects)
        except httpx.HTTPError as exc:
            raise TransportError(_describe(exc), transient=not _is_tls(exc)) from None
        reply = _BlockingReply(response)
        try:
            yield reply
        finally:
            reply.close()

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, *, headers: dict[str, str],
                      body: bytes | AsyncIterable[bytes] | None = None,
                      follow_redirects: bool = False) -> AsyncIterator[_Reply]:
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True, follow_redirects=follow_redirects)
        except httpx.HTTPError as exc:
            raise TransportError(_describe(exc), transient=not _is_tls(exc)) from None
        try:
            yield _Reply(response)
        finally:
            await response.aclose()


def _is_tls(exc: BaseException) -> bool:
    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError | ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _describe(exc: BaseException) -> str:
    """The most telling message of `exc` and its causes (httpx's own is often empty)."""
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__
