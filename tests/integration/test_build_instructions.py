"""Every Dockerfile instruction and the BuildKit-era syntax, built by a real kleened on the busybox test image:
ADD (context files, local archives, URLs), VOLUME, STOPSIGNAL, SHELL, ONBUILD, HEALTHCHECK, MAINTAINER, parser
directives, heredocs, FROM --platform, COPY's flags, --target; what the image records and what its containers get;
unchanged rebuilds; what is refused at parse time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
from pathlib import Path

import pytest

from tests.builds import CACHED, build, built, run, upload
from tests.httpserve import serve_directory
from tests.wsapi import collect, connect, create_image, exec_stream


@pytest.fixture(scope="module")
def base(daemon) -> str:
    create_image(daemon, tag="instrbase")
    return "instrbase"


def inspect(api, image: str) -> dict:
    return api.get(f"/images/{image}/inspect").json()


def targz(members: dict[str, str], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid = len(text), 0o640, 4242
            tar.addfile(info, io.BytesIO(text.encode()))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


# --- ADD ----------------------------------------------------------------------------------------------------------


def test_add_copies_files_and_extracts_local_archives(api, daemon, base, tmp_path):
    (tmp_path / "app.tar.gz").write_bytes(targz({"bin/tool": "tool\n", "etc/tool.conf": "conf\n"}))
    (tmp_path / "keep.tar.gz").write_bytes(targz({"x": "x\n"}))
    b = built(daemon, tmp_path, f"FROM {base}\nADD app.tar.gz /opt/app\nADD --unpack=false keep.tar.gz /opt/\n"
              "ADD --chown=user1:user1 --chmod=640 notes.txt fake.tar.gz /opt/files/\n"
              "RUN cat /opt/app/bin/tool /opt/app/etc/tool.conf /opt/files/fake.tar.gz && "
              "stat -c '%a %u %n' /opt/app/bin/tool /opt/files/notes.txt /opt/keep.tar.gz\n",
              files={"notes.txt": "notes\n", "fake.tar.gz": "a text file named like an archive\n"})
    text = "".join(b.log)
    assert "tool\nconf\na text file named like an archive\n" in text
    assert "640 4242 /opt/app/bin/tool\n640 1000 /opt/files/notes.txt\n" in text  # the archive's owner stays
    assert "/opt/keep.tar.gz\n" in text and len(b.snapshots) == 4


def test_add_of_a_tar_with_dotdot_entries_fails_and_writes_nothing_outside(api, daemon, base, tmp_path):
    evil = tarfile.TarInfo("../../../../../../tmp/kleened-add-escape")
    (tmp_path / "evil.tar.gz").write_bytes(targz({"fine": "fine\n"}, [evil]))
    b = build(daemon, tmp_path, f"FROM {base}\nADD evil.tar.gz /unpacked/\n")
    assert b.log[-1].startswith("ADD failed: refusing archive member '../../../../../../tmp/kleened-add-escape'")
    assert b.close[0] == 1011 and not Path("/tmp/kleened-add-escape").exists()


def test_add_downloads_urls_with_checksums_and_never_extracts_them(api, daemon, base, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "tool.tar.gz").write_bytes(targz({"inside": "x"}))
    (served / "hello.txt").write_text("hello from the web\n")
    os.utime(served / "hello.txt", (1_600_000_000, 1_600_000_000))
    good = "sha256:" + hashlib.sha256(b"hello from the web\n").hexdigest()
    with serve_directory(served) as url:
        b = built(daemon, tmp_path / "ctx", f"FROM {base}\nADD {url}/tool.tar.gz {url}/hello.txt /dl/\n"
                  f"ADD --checksum={good} {url}/hello.txt /named\n"
                  "RUN stat -c '%a %s %Y %n' /dl/tool.tar.gz /dl/hello.txt /named && cat /named\n")
        text = "".join(b.log)
        assert f"600 {(served / 'tool.tar.gz').stat().st_size} " in text  # kept as the archive it is
        assert "600 19 1600000000 /dl/hello.txt\n" in text and "hello from the web\n" in text
        bad = build(daemon, tmp_path / "ctx", f"FROM {base}\nADD --checksum=sha256:{'0' * 64} {url}/hello.txt /x\n")
        assert bad.log[-1].startswith(f"ADD failed: checksum mismatch for {url}/hello.txt: expected sha256:000")
        missing = build(daemon, tmp_path / "ctx", f"FROM {base}\nADD {url}/nothere /x\n")
        assert missing.log[-1] == f"ADD failed: could not download {url}/nothere: HTTP 404"
        again = built(daemon, tmp_path / "ctx", f"FROM {base}\nADD --checksum={good} {url}/hello.txt /named\n",
                      cache=True)
        assert built(daemon, tmp_path / "ctx", f"FROM {base}\nADD --checksum={good} {url}/hello.txt /named\n",
                     cache=True).image_id == again.image_id
    assert not list((daemon.state_root / "tmp").glob("build-*"))  # downloads went with their builds


# --- settings: VOLUME, STOPSIGNAL, SHELL, HEALTHCHECK, MAINTAINER, ONBUILD ----------------------------------------


def test_settings_are_recorded_and_inherited(api, daemon, base, tmp_path):
    parent = built(daemon, tmp_path / "p", f'FROM {base}\nVOLUME ["/data", "/logs"]\nSTOPSIGNAL SIGQUIT\n'
                   'SHELL ["/bin/sh", "-e", "-c"]\nHEALTHCHECK --interval=5m --timeout=3s --retries=4 '
                   "CMD wget -q -O- http://localhost/ || exit 1\nMAINTAINER Jane Doe <jane@example.com>\n"
                   "ONBUILD RUN echo triggered by $PWD > /trigger\nCMD echo hi\n")
    image = inspect(api, parent.image_id)
    assert (image["volumes"], image["stop_signal"], image["shell"], image["onbuild"]) == (
        ["/data", "/logs"], "SIGQUIT", ["/bin/sh", "-e", "-c"], ["RUN echo triggered by $PWD > /trigger"])
    assert image["healthcheck"] == {"test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
                                    "interval": 300.0, "timeout": 3.0, "start_period": 0.0, "start_interval": 5.0,
                                    "retries": 4}
    assert image["labels"]["maintainer"] == "Jane Doe <jane@example.com>" and image["cmd"][:3] == ["/bin/sh", "-e",
                                                                                                   "-c"]
    child = built(daemon, tmp_path / "c", f"FROM {parent.image_id}\nWORKDIR /w\nVOLUME /more\nHEALTHCHECK NONE\n")
    assert "--> Executing 1 build trigger of " + parent.image_id + "\n" in child.log
    image = inspect(api, child.image_id)
    assert (image["volumes"], image["stop_signal"], image["shell"], image["onbuild"], image["healthcheck"]["test"]) \
        == (["/data", "/logs", "/more"], "SIGQUIT", ["/bin/sh", "-e", "-c"], [], ["NONE"])
    assert ["ONBUILD RUN echo triggered by $PWD > /trigger", child.snapshots[0]] in image["instructions"]
    assert run(api, daemon, child.image_id, ["/bin/cat", "/trigger"]) == "triggered by /root\n"  # home, no WORKDIR yet
    grandchild = built(daemon, tmp_path / "g", f"FROM {child.image_id}\nRUN test ! -e /again\n")
    assert not any("trigger" in line for line in grandchild.log)  # triggers are not inherited


def test_shell_applies_to_run_cmd_and_entrypoint(api, daemon, base, tmp_path):
    b = build(daemon, tmp_path, f'FROM {base}\nSHELL ["/bin/sh", "-e", "-c"]\nRUN false; echo not reached\n')
    assert b.log[-1] == "The command '/bin/sh -e -c false; echo not reached' returned a non-zero code: 1"
    b = built(daemon, tmp_path, f'FROM {base}\nSHELL ["/bin/sh", "-e", "-c"]\nCMD echo $((6*7))\n'
              'ENTRYPOINT echo entry\n')
    image = inspect(api, b.image_id)
    assert (image["cmd"], image["entrypoint"]) == (["/bin/sh", "-e", "-c", "echo $((6*7))"],
                                                   ["/bin/sh", "-e", "-c", "echo entry"])


def test_stopsignal_is_what_stop_sends(api, daemon, base, tmp_path):
    script = "trap 'echo got-quit; exit 7' QUIT; trap 'exit 9' TERM; echo ready; while true; do sleep 0.1; done"
    b = built(daemon, tmp_path, f"FROM {base}\nSTOPSIGNAL SIGQUIT\nCMD [\"/bin/sh\", \"-c\", \"{script}\"]\n")
    cid = api.post("/containers/create", json={"image": b.image_id, "network_driver": "host"}).json()["id"]
    eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
    with connect(daemon, "/exec/start") as ws:
        ws.send(json.dumps({"exec_id": eid, "attach": True, "start_container": True}))
        seen = b""
        while b"ready" not in seen:  # the traps are set once the script prints this
            frame = ws.recv(timeout=30)
            seen += frame if isinstance(frame, bytes) else b""
        assert api.post(f"/containers/{cid}/stop").status_code == 200
        rest = collect(ws)
    assert "got-quit\n" in rest.text
    assert api.get(f"/containers/{cid}/inspect").json()["container"]["exit_code"] == 7
    api.delete(f"/containers/{cid}")


def test_volumes_give_containers_anonymous_volumes(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nRUN mkdir -p /data && echo seeded > /data/seed\nVOLUME /data /cache\n")
    before = {v["name"] for v in api.get("/volumes/list").json()}
    named = f"named{secrets.token_hex(3)}"
    cid = api.post("/containers/create", json={"image": b.image_id, "network_driver": "host",
                                               "mounts": [{"type": "volume", "source": named,
                                                           "destination": "/cache"}]}).json()["id"]
    mounts = api.get(f"/containers/{cid}/inspect").json()["container_mountpoints"]
    anonymous = [m["source"] for m in mounts if m["destination"] == "/data"]
    assert len(anonymous) == 1 and len(anonymous[0]) == 64 and {m["destination"] for m in mounts} == {"/data",
                                                                                                       "/cache"}
    eid = api.post("/exec/create", json={"container_id": cid, "cmd": ["/bin/cat", "/data/seed"]}).json()["id"]
    assert exec_stream(daemon, eid).text == "seeded\n"  # filled from the image, as a new volume is
    assert api.delete(f"/containers/{cid}?volumes=true").status_code == 200
    after = {v["name"] for v in api.get("/volumes/list").json()}
    assert after - before == {named}  # the anonymous volume went, the named one stays
    cid = api.post("/containers/create", json={"image": b.image_id, "network_driver": "host"}).json()["id"]
    kept = {m["source"] for m in api.get(f"/containers/{cid}/inspect").json()["container_mountpoints"]}
    api.delete(f"/containers/{cid}")  # without volumes=true (upstream's request): the volumes stay
    assert kept <= {v["name"] for v in api.get("/volumes/list").json()}
    for name in [*kept, named]:
        api.delete(f"/volumes/{name}")


# --- syntax: directives, heredocs, FROM --platform, COPY flags, targets -------------------------------------------


def test_directives_and_escape(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"# syntax=docker/dockerfile:1.7\n# escape=`\nFROM {base}\nRUN echo one `\n"
              "  two\nENV PRICE=`$5 DIR=c:\\x\nRUN echo \"$PRICE $DIR\" > /x\n")
    assert b.log[0] == "--> # syntax=docker/dockerfile:1.7 is ignored: kleened builds Dockerfiles with its own " \
                       "parser\n"
    assert "one two\n" in b.log and run(api, daemon, b.image_id, ["/bin/cat", "/x"]) == "$5 c:\\x\n"


def test_heredocs(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nARG WHO=world\nRUN <<EOF\necho plain $WHO\n# a comment line\nEOF\n"
              "RUN <<'SCRIPT'\n#!/bin/sh\necho \"script at $0\"\nSCRIPT\n"
              "RUN <<A cat > /a && <<-B cat > /b\nfirst $WHO\nA\n\tsecond\n\tB\n"
              "COPY <<EOF <<'RAW' /etc/\nhello ${WHO}\nEOF\nraw ${WHO}\nRAW\nRUN cat /a /b /etc/EOF /etc/RAW\n")
    text = "".join(b.log)
    assert "plain world\n" in text and "script at /dev/pipes/SCRIPT\n" in text
    assert "first world\nsecond\nhello world\nraw ${WHO}\n" in text
    assert run(api, daemon, b.image_id, ["/bin/ls", "/dev/pipes"]).startswith("ls: /dev/pipes")  # gone after


def test_from_platform_and_platform_args(api, daemon, base, tmp_path):
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    b = built(daemon, tmp_path, f"FROM --platform=$BUILDPLATFORM {base} AS build\nARG TARGETPLATFORM TARGETARCH\n"
              f"RUN echo $TARGETPLATFORM $TARGETARCH\nFROM --platform=linux/{machine} {base}\n"
              "COPY --from=build /etc/hostname /h\n")
    assert f"linux/{machine} {machine}\n" in b.log
    other = "s390x" if machine != "s390x" else "amd64"
    b = build(daemon, tmp_path, f"FROM --platform=linux/{other} {base}\nRUN true\n")
    assert b.log == [f"Step 1/2 : FROM --platform=linux/{other} {base}",
                     f"error: FROM --platform=linux/{other}: kleened builds for the host platform "
                     f"(linux/{machine}) only, not linux/{other}"]
    b = build(daemon, tmp_path, f"FROM {base}\n", platform=f"linux/{other}")
    assert b.stream.frames[1].startswith("error: --platform=") and b.close[1] == "failed to process Dockerfile"


def test_copy_flags(api, daemon, base, tmp_path):
    files = {"src/a.txt": "a", "src/x/b.txt": "b", "src/x/c.md": "c", "pkg/one/p.json": "1", "pkg/two/p.json": "2",
             "tool.sh": "echo tool"}
    b = built(daemon, tmp_path, f"FROM {base}\nCOPY --chmod=755 tool.sh /usr/local/bin/tool\n"
              "COPY --chmod=u=rwX,go=rX --link src /srv/\nCOPY --parents pkg/*/p.json ./src/./x/b.txt /app/\n"
              "COPY --exclude=*.md src/x /docs/\n"
              "RUN tool && stat -c '%a %n' /usr/local/bin/tool /srv/a.txt /srv/x && ls -R /app /docs\n", files=files)
    text = "".join(b.log)
    assert "tool\n755 /usr/local/bin/tool\n644 /srv/a.txt\n755 /srv/x\n" in text
    assert "/app/pkg/one:\np.json" in text and "/app/x:\nb.txt" in text and "/docs:\nb.txt\n" in text


def test_target_builds_only_the_stages_it_needs(api, daemon, base, tmp_path):
    dockerfile = (f"FROM {base} AS deps\nRUN echo deps > /deps\nFROM {base} AS broken\nRUN exit 3\n"
                  "FROM deps AS test\nRUN cat /deps\nFROM nosuchimage AS never\n"
                  f"FROM {base} AS prod\nCOPY --from=deps /deps /deps\nLABEL stage=prod\n")
    b = built(daemon, tmp_path, dockerfile)  # the last stage needs deps only: broken and never are skipped
    assert b.log[0] == f"Step 1/5 : FROM {base} AS deps" and "Step 5/5 : LABEL stage=prod" in b.log
    b = built(daemon, tmp_path, dockerfile, target="test")
    assert "deps\n" in b.log and inspect(api, b.image_id)["labels"].get("stage") is None
    b = build(daemon, tmp_path, dockerfile, target="nope")
    assert b.stream.frames[1] == "target stage 'nope' could not be found"


def test_unsupported_syntax_fails_at_parse_time(api, daemon, base, tmp_path):
    for line, reason in [("RUN --mount=type=ssh git fetch", "RUN --mount=type=ssh is not supported"),
                         ("ADD https://github.com/moby/moby.git /src", "ADD of a Git repository is not supported"),
                         ("RUN --security=insecure true", "RUN --security=insecure is not supported")]:
        b = build(daemon, tmp_path, f"FROM {base}\nRUN echo first\n{line}\n")
        assert b.stream.frames[0] == '{"msg_type":"starting","message":"","data":""}'  # nothing ran
        assert len(b.log) == 1 and b.log[0].startswith(f"error in '{line}': {reason}")
        assert b.close == (1011, "failed to process Dockerfile", "")
    b = build(daemon, tmp_path, "FROM scratch\nCOPY a /a\n", files={"a": "a"})
    assert b.log[-1].startswith("error: FROM scratch (an empty image) is not supported yet") and b.close[0] == 1011


# --- unchanged rebuilds --------------------------------------------------------------------------------------------


def test_an_unchanged_rebuild_returns_the_same_image_and_moves_the_tag(api, daemon, base, tmp_path):
    name = f"same{secrets.token_hex(3)}"
    dockerfile = f"FROM {base}\nRUN echo {secrets.token_hex(4)} > /f\nCOPY a.txt /\nCMD cat /f\n"
    first = built(daemon, tmp_path, dockerfile, files={"a.txt": "a\n"}, cache=True, tag=f"{name}:1")
    again = built(daemon, tmp_path, dockerfile, cache=True, tag=f"{name}:1")
    assert again.log.count(CACHED) == 2 and again.image_id == first.image_id != again.build_id
    assert again.snapshots == first.snapshots  # the same snapshot names: `image@snap` still works
    assert inspect(api, f"{name}:1")["id"] == first.image_id
    untagged = built(daemon, tmp_path, dockerfile, cache=True)
    assert untagged.image_id == first.image_id and inspect(api, first.image_id)["tag"] == "1"
    retagged = built(daemon, tmp_path, dockerfile, cache=True, tag=f"{name}:2")  # one name per image: a new one
    assert retagged.image_id != first.image_id and inspect(api, f"{name}:1")["id"] == first.image_id
    via_upload = upload(daemon, _context_tar({"Dockerfile": dockerfile, "a.txt": "a\n"}), cache=True,
                        tag=f"{name}:1")
    assert via_upload.ok and via_upload.close[2] == first.image_id  # the uploaded context has the same content


def test_an_unchanged_rebuild_takes_its_tag_back_from_the_image_that_had_it(api, daemon, base, tmp_path):
    """Docker's rule: the tag names the image the build returns, even when that image existed
    before and another one holds the tag meanwhile."""
    name = f"back{secrets.token_hex(3)}:1"
    one = f"FROM {base}\nRUN echo {secrets.token_hex(4)} > /f\n"
    two = f"FROM {base}\nRUN echo {secrets.token_hex(4)} > /f\n"
    first = built(daemon, tmp_path / "one", one, cache=True, tag=name)
    other = built(daemon, tmp_path / "two", two, cache=True, tag=name)
    assert other.image_id != first.image_id and inspect(api, name)["id"] == other.image_id
    again = built(daemon, tmp_path / "one", one, cache=True, tag=name)
    assert again.log.count(CACHED) == 1 and again.image_id == first.image_id
    assert inspect(api, name)["id"] == first.image_id
    assert inspect(api, other.image_id)["name"] != name.split(":")[0] or inspect(api, other.image_id)["tag"] != "1"


def _context_tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()
