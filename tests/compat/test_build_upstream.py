"""Upstream klee's `build` / `image build` against our daemon: its output, exit codes and the failed-build workflow
of upstream's docs (`klee build` without `--rm`, then `FROM <name>:failed@<snapshot>`)."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from tests.rootfs import file_url, session_tarball

SNAPSHOT = re.compile(r"^--> Snapshot created: (@[0-9a-f]{12})$")


@pytest.fixture(scope="module")
def base(daemon) -> str:
    from tests.compat.conftest import run_upstream

    tag = f"bbase{secrets.token_hex(3)}"
    r = run_upstream(daemon.host, "image", "create", "-t", tag, "fetch", file_url(session_tarball(daemon.workdir)))
    assert r.returncode == 0, r
    return tag


def context(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def snapshots(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := SNAPSHOT.match(line))]


def test_build_prints_steps_output_snapshots_and_the_id(klee, base, tmp_path):
    dockerfile = f"FROM {base}\nRUN echo hello\nCOPY a.txt /etc/\nCMD cat /etc/a.txt\n"
    ctx = context(tmp_path, dockerfile, **{"a.txt": "lol\n"})
    tag = f"cb{secrets.token_hex(3)}"
    r = klee("build", "-t", tag, str(ctx))
    assert r.returncode == 0, r
    image_id = r.lines[0].removeprefix("Started to build image with ID ")
    assert r.lines[1:4] == [f"Step 1/4 : FROM {base}", "Step 2/4 : RUN echo hello", "hello"]
    assert len(snapshots(r.lines)) == 2 and "Using cache" not in r.stdout  # upstream klee sends no `cache`
    assert r.lines[-2:] == ["image created", image_id]
    inspect = json.loads(klee("image", "inspect", tag).stdout)
    assert inspect["id"] == image_id and inspect["cmd"] == ["/bin/sh", "-c", "cat /etc/a.txt"]
    assert [snap for _line, snap in inspect["instructions"] if snap] == snapshots(r.lines)
    run = klee("run", tag)
    assert "lol" in run.lines


def test_quiet_build(klee, base, tmp_path):
    r = klee("image", "build", "-q", str(context(tmp_path, f"FROM {base}\nRUN echo hidden\nENV A=1\n")))
    assert r.returncode == 0, r
    assert r.lines[0].startswith("Started to build image with ID ") and "hidden" not in r.stdout
    assert "Step" not in r.stdout and len(snapshots(r.lines)) == 1
    assert r.lines[-2] == "image created"


def test_failed_build_is_kept_and_resumed_from_a_snapshot(klee, base, tmp_path):
    name = f"cf{secrets.token_hex(3)}"
    r = klee("build", "-t", name, str(context(tmp_path / "a", f"FROM {base}\nRUN echo step1 > /etc/one\n"
                                                               "RUN ls notexist\n")))
    assert r.returncode == 1
    image_id = r.lines[0].removeprefix("Started to build image with ID ")
    (snapshot,) = snapshots(r.lines)
    assert "The command '/bin/sh -c ls notexist' returned a non-zero code: 1" in r.stdout
    assert r.lines[-1] == f"Failed to build image {image_id}. Most recent snapshot is {snapshot}"
    assert json.loads(klee("image", "inspect", f"{name}:failed").stdout)["id"] == image_id
    r = klee("build", "-t", name, str(context(tmp_path / "b", f"FROM {name}:failed{snapshot}\nRUN cat /etc/one\n")))
    assert r.returncode == 0 and "step1" in r.lines, r
    r = klee("build", "--rm", str(context(tmp_path / "c", f"FROM {base}\nRUN false\n")))
    assert r.returncode == 1 and "Failed to build image" not in r.stdout  # with --rm nothing is kept


def test_build_errors(klee, base, tmp_path):
    r = klee("build", str(context(tmp_path / "a", "FROM nonexisting\n")))
    assert r.returncode == 1 and r.lines[-1] == "error: could not find image nonexisting"
    r = klee("build", str(context(tmp_path / "b", "ENV A=1\nFROM x\n")))
    assert r.returncode == 1 and "'ENV A=1' not permitted before a FROM instruction" in r.stdout
    r = klee("build", "--from", base, str(context(tmp_path / "c", "FROM nonexisting\nRUN echo ok\n")))
    assert r.returncode == 0 and f"Using user-supplied parent image: '{base}'" in r.lines


def test_dockerfiles_as_people_write_them(klee, base, tmp_path):
    """The new syntax needs nothing new from the client: upstream klee builds it, and its output stays readable
    (the notes kleened adds end in a newline, as upstream klee prints them as output)."""
    dockerfile = (f"# syntax=docker/dockerfile:1\nFROM --platform=$BUILDPLATFORM {base} AS build\n"
                  "RUN <<EOF\necho from a heredoc\nEOF\nFROM build\nCOPY --chmod=755 <<EOF /usr/local/bin/hi\n"
                  "#!/bin/sh\necho hi\nEOF\nVOLUME /data\nSTOPSIGNAL SIGQUIT\nHEALTHCHECK CMD true\nCMD hi\n")
    r = klee("build", "-t", f"cbnew{secrets.token_hex(2)}", str(context(tmp_path, dockerfile)))
    assert r.returncode == 0, r
    assert "--> # syntax=docker/dockerfile:1 is ignored: kleened builds Dockerfiles with its own parser" in r.lines
    assert "from a heredoc" in r.lines and r.lines[-2] == "image created"
    inspect = json.loads(klee("image", "inspect", r.lines[-1]).stdout)
    assert (inspect["volumes"], inspect["stop_signal"]) == (["/data"], "SIGQUIT")  # extension keys, ignored by klee
