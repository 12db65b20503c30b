"""A real registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

`Registry` runs one with a TLS certificate from a test CA (trustme) and either an htpasswd file
(basic auth), a token server (`TokenServer`, bearer tokens signed with a test key, the flow of
Docker Hub), or no auth at all over plain HTTP. `skopeo` copies OCI layouts in
(`tests.oci_layouts` builds them from the busybox rootfs).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

USER, PASSWORD = "tester", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens (distribution's JWT format, signed RS256, `x5c` header) at /token.

    Valid basic credentials get the scopes they ask for; anonymous requests get pull access to
    repositories under `public/` only. `requests` counts the token requests served.
    """

    def __init__(self, ca: trustme.CA, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert = ca.issue_cert("token-signer", key_type=trustme.KeyType.RSA)
        self.bundle = workdir / "token-ca.pem"
        ca.cert_pem.write_to_path(str(self.bundle))
        self._key = serialization.load_pem_private_key(self.cert.private_key_pem.bytes(), None)
        der = ssl.PEM_cert_to_DER_cert(self.cert.cert_chain_pems[0].bytes().decode())
        self._x5c = [base64.b64encode(der).decode()]
        self.requests = 0
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, scopes: list[str], authenticated: bool) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = actions.split(",") if authenticated else (["pull"] if name.startswith("public/") else [])
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": "kleene-test-issuer", "sub": USER if authenticated else "", "aud": "kleene-test-registry",
                  "exp": now + 600, "nbf": now - 60, "iat": now, "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                given = self.headers.get("Authorization")
                if given is not None and given != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                server.requests += 1
                body = json.dumps({"token": server.token(query.get("scope", []), given is not None)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        return Handler

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Registry:
    workdir: Path
    ca: trustme.CA
    auth: str = "htpasswd"  # "htpasswd", "token" or "none" (plain HTTP)
    token_server: TokenServer | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls(self) -> bool:
        return self.auth != "none"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def cert_dir(self) -> Path:
        """A directory in the layout skopeo's `--*-cert-dir` expects."""
        return self.workdir / "certs.d"

    def _config(self) -> dict:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        http_config: dict = {"addr": self.host, "secret": secrets.token_hex(16)}
        config: dict = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
                        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
                        "http": http_config}
        if self.tls:
            cert = self.ca.issue_cert("127.0.0.1", "localhost")
            cert.cert_chain_pems[0].write_to_path(str(self.workdir / "cert.pem"))
            cert.private_key_pem.write_to_path(str(self.workdir / "key.pem"))
            http_config["tls"] = {"certificate": str(self.workdir / "cert.pem"), "key": str(self.workdir / "key.pem")}
        if self.auth == "htpasswd":
            line = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], check=True, capture_output=True,
                                  text=True).stdout.strip()
            (self.workdir / "htpasswd").write_text(line + "\n")
            config["auth"] = {"htpasswd": {"realm": "kleene-test", "path": str(self.workdir / "htpasswd")}}
        elif self.auth == "token":
            assert self.token_server is not None
            config["auth"] = {"token": {"realm": self.token_server.realm, "service": "kleene-test-registry",
                                        "issuer": "kleene-test-issuer",
                                        "rootcertbundle": str(self.token_server.bundle)}}
        return config

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        (self.cert_dir).mkdir(exist_ok=True)
        shutil.copy(self.ca_file, self.cert_dir / "ca.crt")
        (self.workdir / "config.yml").write_text(yaml.safe_dump(self._config()))
        log = (self.workdir / "registry.log").open("ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.workdir / "config.yml")],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + timeout
        scheme = "https" if self.tls else "http"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log()}")
            try:
                urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=2,
                                       context=context if self.tls else None)
                return
            except urllib.error.HTTPError:
                return  # 401: it answers
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        path = self.workdir / "registry.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def copy_in(self, layout: Path, ref: str, *, all_platforms: bool = False) -> None:
        """`skopeo copy oci:<layout>:<tag> docker://<host>/<repo:tag>`; `ref` is `repo:tag`."""
        tag = ref.rpartition(":")[2]
        argv = ["skopeo", "copy", "--quiet", "--dest-cert-dir", str(self.cert_dir)]
        if not self.tls:
            argv.append("--dest-tls-verify=false")
        if self.auth == "htpasswd" or self.auth == "token":
            argv += ["--dest-creds", f"{USER}:{PASSWORD}"]
        if all_platforms:
            argv.append("--all")
        argv += [f"oci:{layout}:{tag}", f"docker://{self.host}/{ref}"]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_registry(workdir: Path, ca: trustme.CA, auth: str = "htpasswd") -> Iterator[Registry]:
    if auth == "token":
        with TokenServer(ca, workdir) as tokens, Registry(workdir, ca, auth, tokens) as registry:
            yield registry
    else:
        with Registry(workdir, ca, auth) as registry:
            yield registry


class FlakyProxy:
    """A plain-HTTP front for a plain-HTTP registry that breaks blob downloads on demand.

    Only layer-sized blobs (over 64 KiB) are touched. `cut`: how many blob responses to end after
    half their body (the connection is closed);
    `stall`: when set, blob responses stop after half their body until `release` is set;
    `on_cut`: called when a response is cut (a test kills the registry there). `halfway` is set
    whenever a blob response reached its middle.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.cut = 0
        self.redirect = False  # answer blob GETs with a 307 to the registry itself (blob storage's role)
        self.authorizations: list[str] = []  # Authorization headers seen on redirected requests
        self.stall = False
        self.release = threading.Event()
        self.halfway = threading.Event()
        self.on_cut: Callable[[], None] | None = None
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self, method: str) -> None:
                if "/redirected/" in self.path:
                    proxy.authorizations.append(self.headers.get("Authorization", ""))
                    self.path = self.path.replace("/redirected/", "/", 1)
                elif proxy.redirect and method == "GET" and "/blobs/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", f"http://localhost:{proxy.port}/redirected{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(method, self.path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                blob = method == "GET" and "/blobs/" in self.path and response.status == 200 and len(body) > 65536
                if not blob:
                    self.wfile.write(body)
                    return
                half = len(body) // 2
                self.wfile.write(body[:half])
                self.wfile.flush()
                proxy.halfway.set()
                if proxy.cut > 0:
                    proxy.cut -= 1
                    if proxy.on_cut is not None:
                        proxy.on_cut()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if proxy.stall:
                    proxy.release.wait(60)
                self.wfile.write(body[half:])

            def do_GET(self) -> None:
                self._forward("GET")

            def do_HEAD(self) -> None:
                self._forward("HEAD")

            def log_message(self, *args: object) -> None:
                return None

        return Handler

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
