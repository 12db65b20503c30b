"""Downloading one URL to a private file: what image creation (`fetch`) and a build's `ADD <url>` share.

The file is created `O_EXCL`, mode 0600; the download is capped at `max_bytes` and hashed (sha256) while it is
written, so a checksum needs no second read. A stalled server fails after the read timeout; a slow one does not.
Failures are `DownloadError` with a message for the client; what was written stays for the caller to remove.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

MiB = 1024 * 1024
TIMEOUT = httpx.Timeout(60.0, connect=15.0)  # per read: a stalled mirror fails, a slow one doesn't

Progress = Callable[[int, int | None], Awaitable[None]]  # (bytes received, total or None); first call with 0


class DownloadError(ValueError):
    """The URL could not be fetched; `str()` says why."""


@dataclass(frozen=True)
class Downloaded:
    sha256: str  # "sha256:<hex>"
    size: int
    last_modified: float | None  # from the Last-Modified header, as a Unix time


async def download(url: str, path: Path, *, max_bytes: int, progress: Progress | None = None) -> Downloaded:
    """Fetch `url` (http or https, redirects followed) into the new file `path`."""
    digest, received = hashlib.sha256(), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out:
        try:
            async with (
                httpx.AsyncClient(follow_redirects=True, timeout=TIMEOUT) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise DownloadError(f"HTTP {response.status_code}")
                total = int(response.headers.get("content-length") or 0) or None
                if progress is not None:
                    await progress(0, total)
                async for chunk in response.aiter_bytes(MiB):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadError(f"larger than {max_bytes} bytes")
                    out.write(chunk)  # page-cache writes of <= 1 MiB: cheaper than a thread hop
                    digest.update(chunk)
                    if progress is not None:
                        await progress(received, total)
                modified = _http_time(response.headers.get("last-modified"))
        except httpx.HTTPError as exc:
            raise DownloadError(str(exc) or type(exc).__name__) from None
    return Downloaded(sha256="sha256:" + digest.hexdigest(), size=received, last_modified=modified)


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
