"""Upstream klee against each kind of listener our daemon serves, with upstream's outputs and
error texts: a plain unix socket, plain TCP on [::1], TLS on a unix socket, and TLS on TCP
requiring client certificates. `klee exec -it` runs through a pseudo-terminal on each of them
(the interactive WebSocket over plain and TLS transports).
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import secrets
import select
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.conftest import UPSTREAM_KLEE, Result, run_upstream
from tests.conftest import require, require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.rootfs import file_url, session_tarball
from tests.tls import Certs, free_port


@dataclass
class Listeners:
    daemon: Daemon
    certs: Certs
    tcp_port: int
    mtls_port: int
    tls_socket: Path

    def host(self, kind: str) -> str:
        return {
            "unix": self.daemon.host,
            "tcp": f"http://[::1]:{self.tcp_port}",
            "tls-unix": f"https://{self.tls_socket}",
            "mtls-tcp": f"https://127.0.0.1:{self.mtls_port}",
        }[kind]

    def flags(self, kind: str) -> list[str]:
        c = self.certs
        if kind == "mtls-tcp":
            return ["--tlsverify", "--tlscacert", str(c.ca), "--tlscert", str(c.client_cert), "--tlskey",
                    str(c.client_key)]  # fmt: skip
        if kind == "tls-unix":
            return ["--tlsverify", "--tlscacert", str(c.ca)]
        return []

    def klee(self, kind: str, *args: str, **kw) -> Result:
        return run_upstream(self.host(kind), *self.flags(kind), *args, **kw)


KINDS = ["unix", "tcp", "tls-unix", "mtls-tcp"]


@pytest.fixture(scope="module")
def listeners() -> Iterator[Listeners]:
    require_root_runtime()
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    with tempfile.TemporaryDirectory(prefix="kleened-lst-") as tmp:
        workdir = Path(tmp)
        certs = Certs(workdir)
        tcp_port, mtls_port, tls_socket = free_port(), free_port(), workdir / "kleened.tlssock"
        tls = {"tlscert": str(certs.server_cert), "tlskey": str(certs.server_key)}
        config = [
            {"address": f"http://[::1]:{tcp_port}/"},
            {"address": f"https://{tls_socket}", **tls},
            {"address": f"https://127.0.0.1:{mtls_port}", **tls, "tlscacert": str(certs.ca), "tlsverify": True},
        ]
        with running_daemon(workdir / "d", listeners=config) as daemon:
            yield Listeners(daemon, certs, tcp_port, mtls_port, tls_socket)


@pytest.fixture(scope="module")
def container(listeners: Listeners) -> Iterator[str]:
    """A running busybox container for the exec tests."""
    tag = f"lbox{secrets.token_hex(3)}"
    url = file_url(session_tarball(listeners.daemon.workdir))
    assert listeners.klee("unix", "image", "create", "-t", tag, "fetch", url).returncode == 0
    name = f"lst{secrets.token_hex(3)}"
    r = listeners.klee("unix", "run", "-d", "--name", name, tag, "/bin/sleep", "600")
    assert r.returncode == 0, r
    yield name
    listeners.klee("unix", "rmc", "-f", name)


@pytest.mark.parametrize("kind", KINDS)
def test_volume_commands_on_every_listener(listeners, kind):
    name = f"l{kind.replace('-', '')}{secrets.token_hex(2)}"
    assert listeners.klee(kind, "volume", "create", name).lines == [name]
    ls = listeners.klee(kind, "volume", "ls")
    assert ls.lines[0].split() == ["VOLUME", "NAME", "CREATED"] and name in ls.stdout
    assert listeners.klee(kind, "volume", "rm", name).lines == [name]
    assert listeners.klee(kind, "volume", "rm", name).lines == ["No such volume"]


def test_tls_listeners_without_verification(listeners):
    """Upstream verifies nothing unless asked: TLS works without the CA (the unix one needs no client cert)."""
    r = run_upstream(listeners.host("tls-unix"), "volume", "ls")
    assert r.returncode == 0 and r.lines[0].split() == ["VOLUME", "NAME", "CREATED"]


def test_connection_errors_print_upstreams_text(listeners, tmp_path):
    r = run_upstream(f"http://{tmp_path}/none.sock", "volume", "ls")
    assert r.stdout == "unable to connect to kleened: [Errno 2] No such file or directory\n"
    r = run_upstream(f"http://[::1]:{free_port()}", "volume", "ls")
    assert r.stdout.startswith("unable to connect to kleened: [Errno 111] Connection refused") or \
        r.stdout.startswith("unable to connect to kleened: All connection attempts failed"), r
    r = run_upstream(listeners.host("tcp").replace("http://", "https://"), "volume", "ls")
    assert r.stdout.startswith("unable to connect to kleened: [SSL: "), r  # TLS spoken to a plain listener
    c = listeners.certs
    r = run_upstream(listeners.host("mtls-tcp"), "--tlsverify", "--tlscacert", str(c.ca), "volume", "ls")
    assert "unable to connect to kleened: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate " \
           "required" in r.stdout, r
    r = run_upstream(listeners.host("tls-unix"), "--tlsverify", "volume", "ls")  # certifi does not know our CA
    assert r.stdout.startswith("unable to connect to kleened: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                               "failed: unable to get local issuer certificate"), r


def test_config_file_with_the_mtls_settings(listeners, tmp_path):
    c = listeners.certs
    config = tmp_path / "klee_config.yaml"
    config.write_text(f"host: {listeners.host('mtls-tcp')}\ntlsverify: true\ntlscacert: {c.ca}\n"
                      f"tlscert: {c.client_cert}\ntlskey: {c.client_key}\n")  # fmt: skip
    r = run_upstream(listeners.daemon.host, "volume", "ls", env={"KLEE_CONFIG": str(config)})
    assert r.returncode == 0 and r.lines[0].split() == ["VOLUME", "NAME", "CREATED"]  # --host wins over the file


# --- klee exec -it through a pseudo-terminal ------------------------------------------------------------


TYPING_DELAY = 0.05  # seconds between two typed bytes


def drive(argv: list[str], script: list[tuple[bytes, bytes]], timeout: float = 30) -> tuple[bytes, int]:
    """Run `argv` on a new pty; for each (expected, reply): wait until `expected` appeared, type `reply`.

    Returns everything the terminal showed and the exit status.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
    env.update({"TERM": "xterm", "COLUMNS": "120", "LINES": "40"})
    pid, fd = pty.fork()
    if pid == 0:  # the child: klee with the pty as its terminal
        os.execve(argv[0], argv, env)
    output = b""
    deadline = time.monotonic() + timeout

    try:
        for expected, reply in script:
            while expected not in output:
                output += _read(fd, deadline, output)
            type_slowly(fd, reply)
        while True:  # until klee exits and the pty closes
            try:
                output += _read(fd, deadline, output)
            except EOFError:
                break
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # a failed expectation: klee is still waiting
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    return output, os.waitstatus_to_exitcode(status)


def type_slowly(fd: int, data: bytes) -> None:
    """One byte at a time, like a person typing.

    Upstream klee forwards stdin with `sys.stdin.buffer.read(1)` when the terminal is readable:
    bytes that arrive together go into Python's buffer and wait there for the next keystroke.
    """
    for byte in data:
        os.write(fd, bytes([byte]))
        time.sleep(TYPING_DELAY)


def _read(fd: int, deadline: float, output: bytes) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AssertionError(f"timed out; the terminal showed: {output!r}")
    readable, _, _ = select.select([fd], [], [], remaining)
    if not readable:
        raise AssertionError(f"timed out; the terminal showed: {output!r}")
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the child closed the terminal
        raise EOFError from None
    if not chunk:
        raise EOFError
    return chunk


@pytest.mark.parametrize("kind", KINDS)
def test_exec_it_through_a_pty(listeners, container, kind):
    argv = [str(UPSTREAM_KLEE), "--host", listeners.host(kind), *listeners.flags(kind), "exec", "-it", container,
            "/bin/sh"]  # fmt: skip
    output, status = drive(argv, [(b"# ", b"echo hi\r"), (b"hi\r\n", b"exit 3\r")])
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output.decode(errors="replace"))  # rich's colours, ash's queries
    assert status == 0, text  # upstream klee exits 0 whatever the process's code
    assert "created execution instance " in text
    assert "echo hi\r\n" in text and "\nhi\r\n" in text  # the echo of the typed line, then the output
    exec_id = text.split("created execution instance ")[1].split()[0]
    assert f"{exec_id} has exited with exit-code 3" in text, text
    assert listeners.klee(kind, "container", "ls").stdout.count(container) == 1  # still running
