"""klee's transports to kleened, on the standard library only.

The CLI's start-up time is part of every command's latency: `httpx` and `websockets` cost about
90 and 70 ms to import, more than a whole `klee exec` should take. These small clients speak
just what kleened needs: HTTP/1.1 requests with JSON bodies and RFC 6455 WebSocket sessions,
over a unix socket or TCP, with or without TLS.
"""
