"""`commit` against a real kleened: the image runs, its --change lines are applied, the container
goes on unchanged, and bad requests are one-line 4xx."""

from __future__ import annotations

import secrets

import pytest

from tests.cli import run_klee
from tests.wsapi import create_image


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"commitbox:{secrets.token_hex(3)}")


@pytest.fixture
def klee(daemon):
    return lambda *args, **kw: run_klee(daemon.host, *args, **kw)


def test_commit_makes_a_runnable_image_with_changes(api, klee, image):
    name = f"cm{secrets.token_hex(4)}"
    tag = f"committed{secrets.token_hex(3)}:v1"
    r = klee("run", "--name", name, image, "/bin/sh", "-c", "echo hi > /greeting")
    assert r.returncode == 0, r
    try:
        r = klee("container", "commit", "--change", 'CMD ["cat", "/greeting"]', "-c", "ENV GREETING=hello",
                 "-c", "ENV WHO=$GREETING",
                 "-c", "WORKDIR /tmp", "-c", "LABEL made=commit", name, tag)
        assert r.returncode == 0, r
        image_id = r.lines[-1]
        record = api.get(f"/images/{image_id}/inspect").json()
        assert record["cmd"] == ["cat", "/greeting"] and record["workdir"] == "/tmp"
        assert "GREETING=hello" in record["env"] and "WHO=hello" in record["env"]
        assert record["labels"]["made"] == "commit" and f"{record['name']}:{record['tag']}" == tag
        run = klee("run", "--rm", tag)
        assert run.returncode == 0 and "hi" in run.lines, run
        shown = klee("run", "--rm", tag, "/bin/sh", "-c", 'echo "$GREETING-$(pwd)"')
        assert "hello-/tmp" in shown.lines, shown
        untagged = klee("commit", name)
        assert untagged.returncode == 0 and untagged.lines[-1] in klee("lsi", "-q").stdout, untagged
        assert klee("rmi", untagged.lines[-1]).returncode == 0
        assert klee("rmi", tag).returncode == 0  # the container keeps the layers it stacks
        # the container goes on from the committed layer: its file is still there
        after = klee("exec", name, "/bin/cat", "/greeting")
        assert after.returncode == 0 and "hi" in after.lines, after
    finally:
        klee("rmc", name)


def test_commit_errors_are_one_line_4xx(api, klee, image):
    name = f"cme{secrets.token_hex(4)}"
    assert klee("run", "-d", "--name", name, image, "/bin/sleep", "300").returncode == 0
    try:
        running = api.post(f"/containers/{name}/commit", json={})
        assert running.status_code == 409 and "stop it before committing" in running.json()["message"]
        r = klee("commit", name)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and "stop it before committing" in r.stderr, r
        assert api.post(f"/containers/{name}/stop").status_code == 200
        bad_change = api.post(f"/containers/{name}/commit", json={"changes": ["RUN echo no"]})
        assert bad_change.status_code == 400 and "only CMD" in bad_change.json()["message"]
        bad_syntax = api.post(f"/containers/{name}/commit", json={"changes": ["FOO bar"]})
        assert bad_syntax.status_code == 400, bad_syntax.text
        bad_tag = api.post(f"/containers/{name}/commit", json={"tag": "Bad Name"})
        assert bad_tag.status_code == 400, bad_tag.text
        missing = api.post("/containers/nosuchcontainer/commit", json={})
        assert missing.status_code == 404
        r = klee("commit", "-c", "RUN x", name)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r
        # a refused request changed nothing: the container's stack is as before
        inspect = api.get(f"/containers/{name}/inspect").json()
        assert inspect["container"]["id"]
    finally:
        klee("rmc", "-f", name)
