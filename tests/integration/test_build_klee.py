"""`klee build`'s Docker flags (`--target`, `--secret`, `--platform`, `--label`, `-f`), `klee builder prune` and
`klee container rm -v`, against a real kleened."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from tests.cli import run_klee
from tests.daemon import Daemon
from tests.wsapi import create_image


@pytest.fixture(scope="module")
def base(daemon) -> str:
    create_image(daemon, tag="kleebuildbase")
    return "kleebuildbase"


def klee(daemon: Daemon, *args: str, **kw):
    return run_klee(daemon.host, *args, **kw)


def test_target_label_file_and_platform(api, daemon, base, tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "app.Dockerfile").write_text(
        f"FROM {base} AS dev\nLABEL stage=dev\nFROM {base} AS prod\nRUN exit 1\n")
    r = klee(daemon, "build", "-f", "docker/app.Dockerfile", "--target", "dev", "--label", "team=core",
             "--label", "stage=override", "-t", "kleeflags:1", str(tmp_path))
    assert r.returncode == 0, r.stderr
    labels = api.get("/images/kleeflags:1/inspect").json()["labels"]
    assert labels == {"stage": "override", "team": "core"}  # --label wins over the Dockerfile's
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    r = klee(daemon, "build", "-f", "docker/app.Dockerfile", "--target", "dev", "--platform", f"linux/{machine}",
             str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = klee(daemon, "build", "-f", "docker/app.Dockerfile", "--platform", "linux/riscv128", str(tmp_path))
    assert r.returncode == 1 and "kleened builds for the host platform" in r.stdout + r.stderr
    r = klee(daemon, "build", "--label", "novalue", str(tmp_path))
    assert r.returncode != 0 and "invalid label 'novalue': expected KEY=value" in r.stderr


def test_secrets_from_files_and_the_environment(daemon, base, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base}\nRUN --mount=type=secret,id=file --mount=type=secret,id=TOKEN,env=TOKEN "
        "wc -c < /run/secrets/file && echo \"$TOKEN\" | wc -c\n")
    secret_file = tmp_path.parent / f"secret-{secrets.token_hex(3)}"
    secret_file.write_text("0123456789")
    r = klee(daemon, "build", "--no-cache", f"--secret=id=file,src={secret_file}", "--secret", "id=TOKEN",
             str(tmp_path), env={"TOKEN": "abcdefgh"})
    assert r.returncode == 0, r.stderr
    assert "10\n9\n" in r.stdout and "abcdefgh" not in r.stdout
    r = klee(daemon, "build", "--secret", "id=missing", str(tmp_path))
    assert r.returncode != 0 and "secret 'missing': give src=FILE, or env=VARIABLE" in r.stderr
    r = klee(daemon, "build", "--secret", f"id=x,src={tmp_path}/nothere", str(tmp_path))
    assert r.returncode != 0 and "cannot read" in r.stderr


def test_builder_prune(api, daemon, base, tmp_path):
    cache_id = f"klee-prune-{secrets.token_hex(3)}"
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN --mount=type=cache,id={cache_id},target=/c "
                                         "head -c 5000 /dev/zero > /c/blob\n")
    assert klee(daemon, "build", str(tmp_path)).returncode == 0
    refused = klee(daemon, "builder", "prune")
    assert refused.returncode != 0 and "stdin is not a terminal (use --force)" in refused.stderr
    r = klee(daemon, "builder", "prune", "-f")
    assert r.returncode == 0 and f"Deleted: {cache_id}" in r.lines
    assert r.lines[-1].startswith("Total reclaimed space: ") and not r.lines[-1].endswith(" 0B")
    assert f"Deleted: {cache_id}" not in klee(daemon, "builder", "prune", "-f").lines


def test_rm_v_removes_the_anonymous_volumes(api, daemon, base, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nVOLUME /state\nCMD true\n")
    r = klee(daemon, "build", "-t", "kleevol", str(tmp_path))
    assert r.returncode == 0, r.stderr
    name = f"kv{secrets.token_hex(3)}"
    assert klee(daemon, "container", "create", "--name", name, "kleevol").returncode == 0
    volume = json.loads(klee(daemon, "container", "inspect", name).stdout)["container_mountpoints"][0]["source"]
    assert volume in klee(daemon, "volume", "ls", "-q").lines
    r = klee(daemon, "container", "rm", "-v", name)
    assert r.returncode == 0, r.stderr
    assert volume not in klee(daemon, "volume", "ls", "-q").lines
