"""Our klee against registries: login (the credentials file), pull with progress, FROM pulling
in builds (our klee opts in; the upstream klee keeps "could not find image")."""

from __future__ import annotations

import json
import secrets
import stat
import sys
from pathlib import Path

import pytest

from tests.cli import Result, run_cli
from tests.compat.conftest import UPSTREAM_KLEE
from tests.conftest import require
from tests.daemon import Daemon
from tests.integration.oci.conftest import pulled
from tests.oci_layouts import busybox_layout
from tests.registry import PASSWORD, USER, Registry

pytestmark = pytest.mark.integration


def klee(daemon: Daemon, home: Path, *args: str, input: str | None = None) -> Result:
    return run_cli([sys.executable, "-m", "klee", "--host", daemon.host, *args], input=input, timeout=120,
                   env={"HOME": str(home), "KLEE_THEME": "simple"})


@pytest.fixture(scope="module")
def token_image(workdir: Path, tree: Path, token_registry: Registry) -> str:
    layout = workdir / "layout-cli"
    busybox_layout(layout, tree, "cli", extra=[[("etc/", None), ("etc/cli", b"from the registry\n")]])
    token_registry.copy_in(layout, "private/cli:cli")
    return f"{token_registry.host}/private/cli:cli"


def test_login_then_pull_with_progress(oci_daemon, token_registry, token_image, tmp_path):
    refused = klee(oci_daemon, tmp_path, "login", "-u", USER, "--password-stdin", token_registry.host, input="no\n")
    assert refused.returncode != 0 and "login to" in refused.stderr and not (tmp_path / ".klee/auth.json").exists()
    denied = klee(oci_daemon, tmp_path, "pull", token_image)
    assert denied.returncode != 0 and "image pull failed" in denied.stderr
    ok = klee(oci_daemon, tmp_path, "login", "-u", USER, "--password-stdin", token_registry.host,
              input=PASSWORD + "\n")
    assert ok.returncode == 0 and "Login Succeeded" in ok.stdout, ok
    auth_file = tmp_path / ".klee/auth.json"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert token_registry.host in json.loads(auth_file.read_text())["auths"]
    pulled = klee(oci_daemon, tmp_path, "image", "pull", token_image)
    assert pulled.returncode == 0, pulled
    assert any(line.endswith(": Pull complete") for line in pulled.lines) and len(pulled.lines[-1]) == 12
    shown = klee(oci_daemon, tmp_path, "image", "inspect", token_image)
    assert json.loads(shown.stdout)["source"] == token_image
    assert klee(oci_daemon, tmp_path, "logout", token_registry.host).returncode == 0
    assert token_registry.host not in json.loads(auth_file.read_text())["auths"]


def test_build_from_a_registry_image(oci_daemon, registry, workdir, tree, tmp_path):
    layout = workdir / "layout-from"
    busybox_layout(layout, tree, "base", extra=[[("etc/", None), ("etc/base", b"base layer\n")]])
    registry.copy_in(layout, "tests/from:base")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {registry.host}/tests/from:base\nRUN cat /etc/base > /etc/copy\n")
    tag = f"frompull{secrets.token_hex(2)}"
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    upstream = run_cli([str(UPSTREAM_KLEE), "--host", oci_daemon.host, "build", "-t", tag, str(context)])
    assert f"could not find image {registry.host}/tests/from:base" in upstream.stdout, upstream  # never pulls
    built = klee(oci_daemon, tmp_path, "build", "-t", tag, str(context))  # the daemon's auth file has the creds
    assert built.returncode == 0, built
    assert f"Pulling {registry.host}/tests/from:base" in built.stdout and "image created" in built.stdout
    ran = klee(oci_daemon, tmp_path, "run", "--rm", tag, "cat", "/etc/copy")
    assert "base layer" in ran.stdout, ran


def test_upstream_klee_sees_pulled_images(oci_daemon, registry, workdir, tree):
    require(UPSTREAM_KLEE.exists(), "upstream klee not installed (make upstream-klee)")
    layout = workdir / "layout-upstream"
    busybox_layout(layout, tree, "up")
    registry.copy_in(layout, "tests/upstream:up")
    reference = f"{registry.host}/tests/upstream:up"
    image_id = pulled(oci_daemon, reference)

    def upstream(*args: str) -> Result:
        return run_cli([str(UPSTREAM_KLEE), "--host", oci_daemon.host, *args])

    listed = upstream("image", "ls")
    assert listed.returncode == 0 and image_id in listed.stdout, listed
    shown = upstream("image", "inspect", reference)
    assert shown.returncode == 0 and image_id in shown.stdout, shown
    ran = upstream("run", reference, "/bin/echo", "upstream ran it")
    assert "upstream ran it" in ran.stdout, ran
