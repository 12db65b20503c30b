"""Real-world-style Dockerfiles (`tests/fixtures/dockerfiles/*`, written in the shapes of official images: redis,
nginx, postgres, httpd; Go and Node multi-stage builds with `--platform`, cache and secret mounts; heredocs; ONBUILD
bases; monorepo COPYs) built on the busybox test image, tagged `busybox`, twice each: through the API with the
context path (as upstream klee sends it), then through `klee build --upload` (the context as a tar stream).
Each build must succeed, record what `fixture.json` says in the image, and its containers must print `expect`.

fixture.json: `tag`, `build_args`, `secrets` (id -> text), `target`, `image` (a subset of inspect),
`expect` (the image's command's output; `expect_platform` with `{os}` and `{arch}`), `log_contains`.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.builds import build, run
from tests.cli import run_klee
from tests.wsapi import create_image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dockerfiles"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "Dockerfile").is_file())
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


@pytest.fixture(scope="module")
def busybox(daemon) -> str:
    create_image(daemon, tag="busybox")
    return "busybox"


def spec(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name / "fixture.json").read_text())


def check_image(api, daemon, image_id: str, fixture: dict[str, Any]) -> None:
    image = api.get(f"/images/{image_id}/inspect").json()
    for key, value in fixture.get("image", {}).items():
        got = image[key]
        if isinstance(value, dict) and key == "labels":
            got = {k: v for k, v in got.items() if k in value}
        assert got == value, (key, got)
    expect = fixture.get("expect") or fixture.get("expect_platform", "").format(os="linux", arch=ARCH)
    if expect:
        assert run(api, daemon, image_id) == expect


def test_there_are_enough_fixtures():
    assert len(NAMES) >= 15


@pytest.mark.parametrize("name", NAMES)
def test_fixture_builds_through_the_api(api, daemon, busybox, name):
    fixture = spec(name)
    b = build(daemon, FIXTURES / name, tag=fixture.get("tag", ""), buildargs=fixture.get("build_args", {}),
              target=fixture.get("target", ""), cache=True,
              secrets={k: base64.b64encode(v.encode()).decode() for k, v in fixture.get("secrets", {}).items()})
    assert b.ok, b.log[-5:]
    text = "".join(b.log)
    assert fixture.get("log_contains", "") in text
    assert all(secret not in text for secret in fixture.get("secrets", {}).values())
    check_image(api, daemon, b.image_id, fixture)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_builds_with_klee_and_an_uploaded_context(api, daemon, busybox, name, tmp_path):
    fixture = spec(name)
    args = ["build", "--upload", "--no-cache", "-t", fixture.get("tag", f"klee-{name}:latest")]
    args += [f"--build-arg={k}={v}" for k, v in fixture.get("build_args", {}).items()]
    env = {}
    for secret_id, value in fixture.get("secrets", {}).items():
        (tmp_path / secret_id).write_text(value)
        env[f"SECRET_{secret_id.upper()}"] = value
        args.append(f"--secret=id={secret_id},src={tmp_path / secret_id}")
    if fixture.get("target"):
        args += ["--target", fixture["target"]]
    r = run_klee(daemon.host, *args, str(FIXTURES / name), env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr)
    image_id = r.lines[-1]
    assert r.lines[-2] == "image created" and len(image_id) == 12
    check_image(api, daemon, image_id, fixture)
