"""Fixtures for the OCI tests, one set per run of this package: a test CA, real registries (TLS
+ htpasswd, TLS + token server, plain HTTP), a kleened configured to trust them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests import rootfs
from tests.conftest import require, require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.registry import PASSWORD, USER, FlakyProxy, Registry, running_registry
from tests.wsapi import Stream, run_stream


def require_registry_tools() -> None:
    require_root_runtime()
    for tool in ("docker-registry", "skopeo", "htpasswd"):
        require(shutil.which(tool) is not None, f"needs {tool} (Debian packages docker-registry, skopeo, "
                "apache2-utils)")


@pytest.fixture(scope="package")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="package")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("oci")


@pytest.fixture(scope="package")
def tree(workdir: Path) -> Path:
    return rootfs.session_rootfs(workdir)


@pytest.fixture(scope="package")
def registry(workdir: Path, ca: trustme.CA) -> Iterator[Registry]:
    require_registry_tools()
    with running_registry(workdir / "registry-basic", ca, "htpasswd") as r:
        yield r


@pytest.fixture(scope="package")
def token_registry(workdir: Path, ca: trustme.CA) -> Iterator[Registry]:
    require_registry_tools()
    with running_registry(workdir / "registry-token", ca, "token") as r:
        yield r


@pytest.fixture(scope="package")
def plain_registry(workdir: Path, ca: trustme.CA) -> Iterator[Registry]:
    require_registry_tools()
    with running_registry(workdir / "registry-plain", ca, "none") as r:
        yield r


@pytest.fixture(scope="package")
def proxy(plain_registry: Registry) -> Iterator[FlakyProxy]:
    with FlakyProxy(plain_registry.host) as p:
        yield p


def daemon_config(ca_file: Path, auth_file: Path, insecure: list[str]) -> dict[str, Any]:
    return {"registry_ca_file": str(ca_file), "registry_auth_file": str(auth_file), "insecure_registries": insecure,
            "registry_retries": 2}


def write_auth(path: Path, *hosts: str) -> Path:
    import base64

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token} for host in hosts}}))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="package")
def oci_daemon(workdir: Path, registry: Registry, token_registry: Registry, plain_registry: Registry,
               proxy: FlakyProxy) -> Iterator[Daemon]:
    auth = write_auth(workdir / "auth.json", registry.host)
    extra = daemon_config(registry.ca_file, auth, [plain_registry.host, proxy.host])
    with running_daemon(workdir / "daemon", extra=extra) as d:
        yield d


def pull(daemon: Daemon, reference: str, timeout: float = 120, **config: Any) -> Stream:
    return run_stream(daemon, "/images/pull", {"reference": reference, **config}, timeout=timeout)


def pulled(daemon: Daemon, reference: str, **config: Any) -> str:
    stream = pull(daemon, reference, **config)
    assert stream.close_code == 1000, (stream.frames[-3:], stream.close_reason)
    assert stream.close_reason is not None and stream.close_reason["message"] == "image pulled"
    return stream.close_reason["data"]


def progress(stream: Stream) -> list[dict[str, Any]]:
    return [json.loads(f) for f in stream.frames[1:] if isinstance(f, str) and f.startswith('{"type":"progress"')]

