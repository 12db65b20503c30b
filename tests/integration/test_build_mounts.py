"""RUN's mounts and network against a real kleened: cache mounts that persist and are shared by their sharing mode,
binds from the context and from stages, tmpfs, secrets that never reach a layer, the log or the store, and
`RUN --network`; with the hostile cases (a cache id with `/..`, a bind source outside the context, a RUN that
copies its secret into the image)."""

from __future__ import annotations

import base64
import secrets
import threading
from pathlib import Path

import pytest

from tests.builds import CACHED, Build, build, built, run, stored
from tests.wsapi import create_image


@pytest.fixture(scope="module")
def base(daemon) -> str:
    create_image(daemon, tag="mountbase")
    return "mountbase"


def secret(value: bytes) -> str:
    return base64.b64encode(value).decode()


def output(b: Build) -> str:
    return "".join(line for line in b.log if not line.startswith(("Step ", "--> ")))


# --- cache mounts --------------------------------------------------------------------------------------------------


def test_cache_mounts_persist_across_builds_stay_out_of_layers_and_prune(api, daemon, base, tmp_path):
    cache_id = f"/../../../../../tmp/kleened-cache-escape-{secrets.token_hex(3)}"  # an id is never a path
    run_line = f"RUN --mount=type=cache,id={cache_id},target=/var/cache/thing echo {{}} >> /var/cache/thing/log " \
               "&& wc -l < /var/cache/thing/log"
    first = built(daemon, tmp_path, f"FROM {base}\n{run_line.format('one')}\n")
    second = built(daemon, tmp_path, f"FROM {base}\n{run_line.format('two')}\n")
    assert output(first).strip() == "1" and output(second).strip() == "2"
    assert not Path(cache_id).exists() and not list(Path("/tmp").glob("kleened-cache-escape-*"))
    caches = list((daemon.state_root / "buildcache").iterdir())
    assert caches and all(p.name.isalnum() for p in caches)
    assert run(api, daemon, second.image_id, ["/bin/sh", "-c", "test -e /var/cache || echo none"]) == "none\n"
    pruned = api.post("/build/prune").json()
    assert cache_id in pruned["cache_mounts"] and pruned["bytes_reclaimed"] >= 8
    third = built(daemon, tmp_path, f"FROM {base}\n{run_line.format('three')}\n")
    assert output(third).strip() == "1"


def test_a_locked_cache_is_used_by_one_build_at_a_time(daemon, base, tmp_path):
    results: list[Build] = []
    line = ("RUN --mount=type=cache,id=locked-{id},target=/c,sharing=locked "
            "mkdir /c/in-use && sleep 0.5 && rmdir /c/in-use && echo {n}")
    token = secrets.token_hex(3)
    threads = [threading.Thread(target=lambda n=n: results.append(build(
        daemon, tmp_path / str(n), f"FROM {base}\n{line.format(id=token, n=n)}\n"))) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [b.ok for b in results] == [True] * 3, [b.log for b in results]  # mkdir would fail for a second user


def test_cache_mount_options(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base} AS seed\nRUN mkdir /seed && echo seeded > /seed/file\n"
              f"FROM {base}\nRUN --mount=type=cache,id=opts-{secrets.token_hex(3)},target=/c,from=seed,source=/seed,"
              "mode=0700,uid=1000,gid=1000 stat -c '%a %u %g' /c && cat /c/file\n")
    assert "700 1000 1000\nseeded\n" in output(b)


# --- binds and tmpfs -----------------------------------------------------------------------------------------------


def test_bind_mounts_from_the_context(api, daemon, base, tmp_path):
    files = {".dockerignore": "private.txt\n", "private.txt": "hidden", "app/requirements.txt": "flask\n"}
    b = built(daemon, tmp_path, f"FROM {base}\nRUN --mount=type=bind,target=/ctx ls -A /ctx && "
              "! touch /ctx/new 2>/dev/null && echo read-only\n"
              "RUN --mount=type=bind,source=app/requirements.txt,target=/r.txt cat /r.txt\n"
              "RUN --mount=target=/ctx,rw touch /ctx/new && ls /ctx | grep -c new\n", files=files)
    assert ".dockerignore\nDockerfile\napp\nread-only\n" in output(b) and "flask\n" in output(b)
    assert not (tmp_path / "new").exists()  # rw writes went to a throw-away copy
    assert run(api, daemon, b.image_id, ["/bin/ls", "/"]).split() == run(api, daemon, base, ["/bin/ls", "/"]).split()
    escape = build(daemon, tmp_path, f"FROM {base}\nRUN --mount=type=bind,source=../../etc,target=/e ls /e\n")
    assert escape.log[-1].startswith("error: RUN --mount source '../../etc': forbidden path outside the build context")


def test_bind_content_is_part_of_the_cache_key(daemon, base, tmp_path):
    dockerfile = f"FROM {base}\nRUN --mount=type=bind,source=list.txt,target=/l cat /l\n"
    built(daemon, tmp_path, dockerfile, files={"list.txt": "a\n"}, cache=True)
    assert CACHED in built(daemon, tmp_path, dockerfile, cache=True).log
    changed = built(daemon, tmp_path, dockerfile, files={"list.txt": "b\n"}, cache=True)
    assert CACHED not in changed.log and "b\n" in changed.log


def test_bind_from_a_stage_and_tmpfs(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base} AS tools\nRUN echo tool > /tool\n"
              f"FROM {base}\nRUN --mount=from=tools,source=/tool,target=/t --mount=type=tmpfs,target=/scratch,"
              "size=1m cat /t && touch /scratch/x && grep -c ' /scratch tmpfs' /proc/mounts\n")
    assert "tool\n1\n" in output(b)
    assert run(api, daemon, b.image_id, ["/bin/sh", "-c", "ls -d /t /scratch 2>&1 | wc -l"]) == "2\n"  # ls errors


# --- secrets ------------------------------------------------------------------------------------------------------


def test_secrets_reach_the_run_only(api, daemon, base, tmp_path):
    value = f"s3cr3t-{secrets.token_hex(8)}"
    b = built(daemon, tmp_path, f"FROM {base}\nRUN --mount=type=secret,id=tok cat /run/secrets/tok && "
              "stat -c '%a %u' /run/secrets/tok\n"
              "RUN --mount=type=secret,id=tok,env=TOKEN,target=/etc/tok,mode=0444,uid=1000 "
              "echo \"env $TOKEN\" && stat -c '%a %u' /etc/tok\n"
              "RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped\n",
              secrets={"tok": secret(value.encode() + b"\n")})
    text = "".join(b.log)
    assert value not in text, b.log
    assert output(b) == "****\n400 0\nenv ****\n\n444 1000\nskipped\n"
    assert run(api, daemon, b.image_id, ["/bin/sh", "-c", "ls /run /etc/tok 2>&1 | wc -l"]) == "2\n"  # no stubs
    leaks = [p for p in (daemon.state_root / "layers").rglob("*") if p.is_file() and not p.is_symlink()
             and value.encode() in p.read_bytes()]
    assert leaks == []
    assert value.encode() not in (daemon.state_root / "metadata.sqlite").read_bytes()
    assert value not in daemon.log()
    assert not any(value in str(doc) for kind in ("image", "buildcache") for doc in stored(daemon, kind))


def test_a_required_secret_must_be_given(daemon, base, tmp_path):
    b = build(daemon, tmp_path, f"FROM {base}\nRUN --mount=type=secret,id=npmrc,required=true true\n")
    assert b.log[-1] == "error: secret 'npmrc' is required, but the build was given no such secret"
    b = build(daemon, tmp_path, f"FROM {base}\n", secrets={"bad/id": secret(b"x")})
    assert b.stream.frames[1].startswith("error: invalid secret id 'bad/id'")


@pytest.mark.parametrize("command", ["--mount=type=secret,id=tok cp /run/secrets/tok /leaked",
                                     "--mount=type=secret,id=tok,env=TOKEN echo $TOKEN > /leaked",
                                     "--mount=type=secret,id=tok cp /run/secrets/tok /leaked; exit 3"])
def test_a_run_cannot_put_its_secret_into_the_image(api, daemon, base, tmp_path, command):
    value = f"leak-{secrets.token_hex(8)}"
    name = f"leaky{secrets.token_hex(2)}"
    b = build(daemon, tmp_path, f"FROM {base}\nRUN echo before > /before\n"
              f"RUN {command}\n", secrets={"tok": secret(value.encode())},
              cleanup=False, tag=name)
    assert b.close[:2] == (1011, "image build failed")
    if "exit 3" not in command:
        assert b.log[-1].startswith("error: the command wrote a build secret into the image (/leaked)")
    failed = api.get(f"/images/{name}:failed/inspect").json()
    assert run(api, daemon, failed["id"], ["/bin/sh", "-c", "cat /before; test -e /leaked || echo gone"]) == \
        "before\ngone\n"  # the failed image keeps what came before, never the secret
    assert not [p for p in (daemon.state_root / "layers").rglob("*") if p.is_file() and not p.is_symlink()
                and value.encode() in p.read_bytes()]
    api.delete(f"/images/{name}:failed")


# --- RUN --network -------------------------------------------------------------------------------------------------


def test_run_network_modes(daemon, base, tmp_path):
    count = "ip -o link show | wc -l"
    b = built(daemon, tmp_path, f"FROM {base}\nRUN {count}\nRUN --network=host {count}\n"
              f"RUN --network=default {count}\n", container_config={"network_driver": "disabled"})
    isolated, host, default = (int(n) for n in output(b).split())
    assert isolated == default == 1 and host > 1  # only lo, except in the host's namespace
    b = built(daemon, tmp_path, f"FROM {base}\nRUN --network=none {count}\n")  # upstream klee's default: host
    assert output(b).split() == ["1"]
