"""A client of the OCI distribution API v2, on top of an `HttpTransport`.

Authentication follows the registry's lead: requests go out anonymously (or with the token
already held) and a 401 answer's `WWW-Authenticate` challenge says what to do, `Bearer`
(fetch a token from `realm` for `service` and the scopes asked, with basic credentials when
there are any) or `Basic` (send the credentials on every request). Tokens are kept for the
client's life, which is one operation (a pull, a push).

Retries: a request that fails to connect, breaks, or gets 429 or a 5xx is sent again, up to
`retries` times with a growing pause. Blob bodies are retried by the caller (a streamed body
cannot be replayed halfway); `blob()` only opens the stream.

Layer downloads (`download`) run in a worker thread from request to last byte, handing the
reply to the caller's consumer in that thread (which verifies and unpacks it), so the bytes
never pass through the event loop. A cancellation aborts the connection, which ends a read
that waits, and waits for the thread; a 401 there is answered from trio and tried once more.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import threading
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import trio

from ...platform.base import TransportError
from .interfaces import BlockingReply, HttpReply, HttpTransport
from .manifest import ACCEPT, MAX_MANIFEST

log = logging.getLogger(__name__)

T = TypeVar("T")
BodyFactory = Callable[[], bytes | AsyncIterable[bytes] | None]
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')
_TOKEN_LIMIT = 1024 * 1024
_ERROR_LIMIT = 64 * 1024
_BACKOFF = 0.25  # seconds before the first retry; doubled each time, at most _BACKOFF_MAX
_BACKOFF_MAX = 4.0


class RegistryError(Exception):
    """A registry refused or failed a request; `str()` is for the client."""

    def __init__(self, message: str, *, status: int = 0, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class _Token(msgspec.Struct):
    token: str = ""
    access_token: str = ""


class _ErrorBody(msgspec.Struct):
    errors: list[dict[str, object]] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify(data: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise RegistryError(f"digest mismatch for {what}: expected {digest}, got {algorithm}:{actual}")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        key = match.group(1) or match.group(3)
        params[key.lower()] = match.group(2) if match.group(1) else match.group(4)
    return scheme.lower(), params


class RegistryClient:
    """Requests to one registry (`base`: `https://host[:port]`) on behalf of one operation."""

    def __init__(self, transport: HttpTransport, base: str, credentials: Credentials | None = None, *,
                 retries: int = 3) -> None:
        self._transport = transport
        self.base = base.rstrip("/")
        self._credentials = credentials
        self._retries = retries
        self._authorization = ""
        self._scopes: list[str] = []
        self._bearer = ""  # the registry's Bearer challenge, once it sent one

    # --- the API -------------------------------------------------------------------------------

    async def check(self) -> None:
        """`GET /v2/`: raises unless the registry answers and accepts our credentials."""
        async with self.send("GET", "/v2/", scope="") as reply:
            await self._expect(reply, (200,), "the registry's API")

    async def manifest(self, repository: str, target: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index; a digest target is verified."""
        return await self._retried(self._manifest, repository, target)

    async def _manifest(self, repository: str, target: str) -> tuple[bytes, str, str]:
        path = f"/v2/{repository}/manifests/{target}"
        async with self.send("GET", path, scope=_pull(repository), headers={"Accept": ACCEPT}) as reply:
            if reply.status == 404:
                raise RegistryError(f"manifest unknown: {repository}:{target} not found", status=404)
            await self._expect(reply, (200,), f"manifest {target}")
            data = await self._read(reply, MAX_MANIFEST, "manifest")
            media_type = (reply.header("content-type") or "").split(";")[0].strip()
        digest = target if target.startswith("sha") and ":" in target else sha256(data)
        verify(data, digest, f"manifest {target}")
        return data, media_type, digest

    async def read_blob(self, repository: str, digest: str, limit: int) -> bytes:
        """A small blob (a config), read whole and verified; a broken transfer is tried again."""
        return await self._retried(self._read_blob, repository, digest, limit)

    async def _retried(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`fn(*args)` again while it fails with a transient error (a body broken mid-transfer)."""
        for attempt in range(self._retries):
            try:
                return await fn(*args)
            except RegistryError as exc:
                if not exc.transient:
                    raise
                log.warning("%s; trying again", exc)
            await self.pause(attempt)
        return await fn(*args)

    async def _read_blob(self, repository: str, digest: str, limit: int) -> bytes:
        async with self.blob(repository, digest) as reply:
            data = await self._read(reply, limit, f"blob {digest}")
        verify(data, digest, f"blob {digest}")
        return data

    @contextlib.asynccontextmanager
    async def blob(self, repository: str, digest: str) -> AsyncIterator[HttpReply]:
        """The blob's reply, status 200, redirects to blob storage followed."""
        async with self.send("GET", f"/v2/{repository}/blobs/{digest}", scope=_pull(repository),
                             follow_redirects=True) as reply:
            if reply.status == 404:
                raise RegistryError(f"blob unknown: {digest} not found in {repository}", status=404)
            await self._expect(reply, (200,), f"blob {digest}")
            yield reply

    async def download(self, repository: str, digest: str, consume: Callable[[BlockingReply], T]) -> T:
        """GET a blob in a worker thread and return `consume(reply)`, run there on the 200 reply
        (redirects followed). Failures: `RegistryError` for statuses, `TransportError` for the network."""
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        for attempt in range(2):
            headers = {"Authorization": self._authorization} if self._authorization else {}
            challenge, value = await _run_abortable(
                lambda aborter, h=headers, first=attempt == 0: self._download(url, h, digest, consume, aborter, first))
            if challenge is None:
                return value  # type: ignore[return-value]
            await self._authenticate(challenge, _pull(repository))
        raise AssertionError("unreachable")

    def _download(self, url: str, headers: dict[str, str], digest: str, consume: Callable[[BlockingReply], T],
                  aborter: _Aborter, challenge_ok: bool) -> tuple[str | None, T | None]:
        """In the worker thread: (the 401's challenge, None) to answer first, or (None, consumed)."""
        with self._transport.blocking("GET", url, headers=headers, follow_redirects=True) as reply, \
                aborter.attached(reply.abort):
            if reply.status == 401 and challenge_ok:
                return reply.header("www-authenticate") or "", None
            if reply.status == 404:
                raise RegistryError(f"blob unknown: {digest} not found", status=404)
            if reply.status != 200:
                body = _read_some(reply, _ERROR_LIMIT)
                raise RegistryError(_error_text(body, f"blob {digest}: HTTP {reply.status}"), status=reply.status,
                                    transient=reply.status == 429 or reply.status >= 500)
            return None, consume(reply)

    async def has_blob(self, repository: str, digest: str) -> bool:
        async with self.send("HEAD", f"/v2/{repository}/blobs/{digest}", scope=_push(repository),
                             follow_redirects=True) as reply:
            if reply.status == 404:
                return False
            await self._expect(reply, (200,), f"blob {digest}")
            return True

    async def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount; False when the registry did not mount (then upload)."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        async with self.send("POST", f"/v2/{repository}/blobs/uploads/?{query}",
                             scope=f"{_push(repository)} {_pull(source)}", body=lambda: b"") as reply:
            if reply.status == 201:
                return True
            await self._expect(reply, (202,), f"mount of {digest}")
            await self._cancel_upload(reply)
            return False

    async def upload_blob(self, repository: str, digest: str, body: Callable[[], AsyncIterable[bytes]]) -> None:
        """Upload a blob: start a session, stream it in one PATCH, then commit it with its digest."""
        async with self.send("POST", f"/v2/{repository}/blobs/uploads/", scope=_push(repository),
                             body=lambda: b"") as reply:
            await self._expect(reply, (202,), "blob upload")
            location = self._location(reply)
        async with self.send("PATCH", location, scope=_push(repository), body=body,
                             headers={"Content-Type": "application/octet-stream"}, retry=False) as reply:
            await self._expect(reply, (202, 204), f"upload of {digest}")
            location = self._location(reply)
        sep = "&" if "?" in location else "?"
        async with self.send("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", scope=_push(repository),
                             body=lambda: b"", retry=False) as reply:
            await self._expect(reply, (201,), f"commit of {digest}")

    async def put_manifest(self, repository: str, target: str, data: bytes, media_type: str) -> None:
        async with self.send("PUT", f"/v2/{repository}/manifests/{target}", scope=_push(repository),
                             body=lambda: data, headers={"Content-Type": media_type}) as reply:
            await self._expect(reply, (201,), f"manifest {target}")

    # --- requests, auth and retries ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def send(self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None,
                   body: BodyFactory | None = None, follow_redirects: bool = False,
                   retry: bool = True) -> AsyncIterator[HttpReply]:
        """One request with auth and retries; the reply is any status but 401 (which raises)."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        if self._bearer and any(s not in self._scopes for s in scope.split()):
            # A token lacking a scope is not always refused: a mount without pull access to its
            # source becomes a plain upload. Ask for a token that covers everything first.
            await self._authenticate(self._bearer, scope)
        yielded = False  # exceptions from the caller's block are theirs, never retried here
        for attempt in range(self._retries + 1):
            authenticated = False
            for _ in range(2):  # once as we are, once more after answering a challenge
                request_headers = {**(headers or {})}
                if self._authorization:
                    request_headers["Authorization"] = self._authorization
                try:
                    async with self._transport.request(method, url, headers=request_headers,
                                                       body=body() if body else None,
                                                       follow_redirects=follow_redirects) as reply:
                        if reply.status == 401 and not authenticated:
                            challenge = reply.header("www-authenticate") or ""
                        elif (reply.status == 429 or reply.status >= 500) and retry and attempt < self._retries:
                            challenge = None
                            break
                        else:
                            if reply.status == 401:
                                raise RegistryError(await self._describe(reply, "authentication failed"), status=401)
                            yielded = True
                            yield reply
                            return
                except TransportError as exc:
                    if yielded:
                        raise
                    if not (exc.transient and retry and attempt < self._retries):
                        raise RegistryError(f"cannot reach {self.base}: {exc}", transient=exc.transient) from None
                    challenge = None
                    break
                await self._authenticate(challenge, scope)
                authenticated = True
            await self.pause(attempt)
        raise RegistryError(f"{self.base} keeps failing: giving up after {self._retries + 1} attempts", transient=True)

    @staticmethod
    async def pause(attempt: int) -> None:
        await trio.sleep(min(_BACKOFF * 2**attempt, _BACKOFF_MAX))

    async def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                raise RegistryError(f"{self.base} requires authentication: use klee login or pass credentials",
                                    status=401)
            self._authorization = self._credentials.basic()
            return
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(f"{self.base} requires an authentication this client does not know: {challenge!r}",
                                status=401)
        self._bearer = challenge
        for wanted in [*params.get("scope", "").split(" "), *scope.split(" ")]:
            if wanted and wanted not in self._scopes:
                self._scopes.append(wanted)
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in self._scopes]
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self._credentials.basic()} if self._credentials else {}
        async with self._token_request(url, headers) as reply:
            if reply.status in (401, 403):
                raise RegistryError(f"{self.base} refused the credentials (token server answered {reply.status})",
                                    status=401)
            await self._expect(reply, (200,), "token")
            data = await self._read(reply, _TOKEN_LIMIT, "token")
        try:
            token = msgspec.json.decode(data, type=_Token)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RegistryError("the token server's answer is not a token") from None
        if not (token.token or token.access_token):
            raise RegistryError("the token server's answer holds no token")
        self._authorization = f"Bearer {token.token or token.access_token}"

    @contextlib.asynccontextmanager
    async def _token_request(self, url: str, headers: dict[str, str]) -> AsyncIterator[HttpReply]:
        try:
            async with self._transport.request("GET", url, headers=headers, follow_redirects=True) as reply:
                yield reply
        except TransportError as exc:
            raise RegistryError(f"cannot reach the token server: {exc}", transient=exc.transient) from None

    def _location(self, reply: HttpReply) -> str:
        location = reply.header("location")
        if not location:
            raise RegistryError("the registry's upload answer has no Location")
        return urllib.parse.urljoin(reply.url, location)

    async def _cancel_upload(self, reply: HttpReply) -> None:
        with contextlib.suppress(RegistryError):
            async with self.send("DELETE", self._location(reply), scope="", retry=False):
                pass

    async def _expect(self, reply: HttpReply, statuses: tuple[int, ...], what: str) -> None:
        if reply.status in statuses:
            return
        transient = reply.status == 429 or reply.status >= 500
        raise RegistryError(await self._describe(reply, f"{what}: HTTP {reply.status}"), status=reply.status,
                            transient=transient)

    async def _describe(self, reply: HttpReply, fallback: str) -> str:
        try:
            body = await reply.read(_ERROR_LIMIT)
        except (ValueError, TransportError):
            return fallback
        return _error_text(body, fallback)

    @staticmethod
    async def _read(reply: HttpReply, limit: int, what: str) -> bytes:
        try:
            return await reply.read(limit)
        except ValueError:
            raise RegistryError(f"{what} is larger than {limit} bytes") from None
        except TransportError as exc:
            raise RegistryError(f"{what}: the connection broke: {exc}", transient=True) from None


def _error_text(body: bytes, fallback: str) -> str:
    """The registry's own error text when it gave one (`{"errors": [{"message": ...}]}`)."""
    try:
        errors = msgspec.json.decode(body, type=_ErrorBody).errors
    except (msgspec.DecodeError, msgspec.ValidationError):
        return fallback
    texts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
    return f"{fallback} ({'; '.join(texts)})" if texts else fallback


def _read_some(reply: BlockingReply, limit: int) -> bytes:
    data = bytearray()
    with contextlib.suppress(TransportError):
        while len(data) <= limit and (piece := reply.read()):
            data += piece
    return bytes(data) if len(data) <= limit else b""


class _Aborter:
    """Lets trio abort what a worker thread is blocked in (its current reply), whenever it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abort: Callable[[], None] | None = None
        self.aborted = False

    @contextlib.contextmanager
    def attached(self, abort: Callable[[], None]) -> Any:
        with self._lock:
            if self.aborted:
                abort()
            self._abort = abort
        try:
            yield
        finally:
            with self._lock:
                self._abort = None

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self._abort is not None:
                self._abort()


async def _run_abortable(fn: Callable[[_Aborter], T]) -> T:
    """`fn(aborter)` in a worker thread. If the calling task is cancelled meanwhile, the aborter
    fires (ending the thread's blocking read) and the cancellation is raised once the thread has
    ended: the thread never outlives the call (it writes into a layer that is then removed)."""
    aborter = _Aborter()
    result: list[T] = []
    failure: list[BaseException] = []

    async def work(nursery: trio.Nursery) -> None:
        try:
            result.append(await trio.to_thread.run_sync(fn, aborter))
        except BaseException as exc:  # handed to the caller below, or replaced by its cancellation
            failure.append(exc)
        finally:
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, nursery)
        try:
            await trio.sleep_forever()
        finally:
            if not result and not failure:  # cancelled from outside while the thread runs
                aborter.abort()
    if failure:
        raise failure[0]
    return result[0]


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"
