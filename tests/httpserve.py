"""A static file server on 127.0.0.1 for tests that download (image creation, ADD <url>)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass  # pytest shows what matters; a line per request is noise


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve `root` (Last-Modified from the files' mtimes) as `http://127.0.0.1:<port>` while the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
