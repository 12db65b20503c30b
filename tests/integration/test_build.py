"""Image builds over `/images/build` against a real kleened: upstream's behaviours (kleene-behaviours.md §5.2, item
numbers in the test names), hostile inputs, and the extensions (cache, multi-stage, uploads, ENTRYPOINT/EXPOSE/LABEL).

Every build runs in a context directory of its own (pytest's tmp_path) on the busybox test image. Checks that look
inside an image run a container from it. The "nothing left behind" checks compare the layer directories on disk
with the layers stored images and containers stack (read from the daemon's SQLite store, which WAL lets us read).
"""

from __future__ import annotations

import json
import secrets
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.builds import (
    CACHED,
    SNAPSHOT,
    Build,
    build,
    builders,
    built,
    config,
    run,
    tar_of,
    unreferenced_layers,
    upload,
)
from tests.daemon import running_daemon
from tests.wsapi import collect, connect, create_image, exec_stream, run_stream


@pytest.fixture(scope="module")
def base(daemon) -> str:
    """The busybox base image, tagged `buildbase:latest`."""
    create_image(daemon, tag="buildbase")
    return "buildbase"


# --- RUN, relayed output, images of builds ---------------------------------------------------------------------


def test_run_output_is_relayed_and_lands_in_the_image_1_6(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f'FROM {base}\nRUN echo "lets test that we receive this!"\nRUN uname\n'
              'RUN echo "lol1" > /root/test_1.txt\n', tag="websock_img")
    assert b.log[:3] == [f"Step 1/4 : FROM {base}", 'Step 2/4 : RUN echo "lets test that we receive this!"',
                         "lets test that we receive this!\n"]
    assert "Linux\n" in b.log and len(b.snapshots) == 3
    assert all(isinstance(frame, str) for frame in b.stream.frames)  # upstream klee needs TEXT frames
    assert api.get("/images/list").json()[0]["id"] == b.image_id  # newest first
    assert run(api, daemon, "websock_img", ["/bin/cat", "/root/test_1.txt"]) == "lol1\n"
    assert api.delete("/images/websock_img").json() == {"id": "websock_img"}
    assert api.delete("/images/websock_img").json() == {"message": "Error: No such image: websock_img\n"}


def test_image_inspect_of_a_built_image(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nRUN true\nCMD echo x\n", tag="test:inspect")
    image = api.get("/images/test:inspect/inspect").json()
    assert image["id"] == b.image_id and image["instructions"] == [
        [f"FROM {base}", ""], ["RUN true", b.snapshots[0]], ["CMD echo x", ""]]
    assert api.get("/images/testlol:inspect/inspect").status_code == 404


def test_images_in_use_cannot_be_removed_3_4(api, daemon, base, tmp_path):
    parent = built(daemon, tmp_path / "p", f"FROM {base}\nRUN true\n").image_id
    child = built(daemon, tmp_path / "c", f"FROM {parent}\nRUN true\nEXPOSE 80 80\n").image_id
    r = api.delete(f"/images/{parent}")
    assert (r.status_code, r.json()["message"]) == (404, f"could not remove image {parent} since it is used for "
                                                         f"images:\n{child}")
    cid = api.post("/containers/create", json={"image": child, "network_driver": "host"}).json()["id"]
    r = api.delete(f"/images/{child}")
    assert (r.status_code, r.json()["message"]) == (404, f"could not remove image {child} since it is used for "
                                                         f"containers:\n{cid}")
    assert api.get(f"/images/{child}/inspect").json()["exposed_ports"] == ["80/tcp"]
    api.delete(f"/containers/{cid}")
    for image in (child, parent):
        assert api.delete(f"/images/{image}").status_code == 200


def test_invalid_configs_close_1002_5(daemon, tmp_path):
    for bad in ({**config(tmp_path), "quiet": "lol"}, {"container_config": {}},
                {**config(tmp_path), "buildargs": "should-be-JSON"}):
        with connect(daemon, "/images/build") as ws:
            ws.send(json.dumps(bad))
            stream = collect(ws)
        assert stream.close_code == 1002 and stream.close_reason["msg_type"] == "error", bad
        assert stream.frames == []


def test_builder_container_is_listed_during_the_build_and_gone_after(api, daemon, base, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN echo go; sleep 2\n")
    with connect(daemon, "/images/build") as ws:
        ws.send(json.dumps(config(tmp_path)))
        image_id = json.loads(ws.recv(timeout=30))["data"]
        while ws.recv(timeout=30) != "go\n":
            pass
        assert f"builder_{image_id}" in builders(api)
        listed = {c["id"]: c for c in api.get("/containers/list?all=true").json()}
        assert listed[image_id]["name"] == f"builder_{image_id}"  # the image id is the build container's id
        stream = collect(ws)
    assert stream.close_code == 1000 and builders(api) == []


# --- WORKDIR, COPY, CMD --------------------------------------------------------------------------------------------


def test_workdir_is_created_and_used_by_run_and_copy_13(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nWORKDIR /testdir\nRUN pwd\nRUN echo x > rel.txt\nWORKDIR /home/\n"
              "RUN pwd\nCOPY test.txt .\n", files={"test.txt": "lol\n"})
    assert "/testdir\n" in b.log and "/home\n" in b.log
    assert run(api, daemon, b.image_id, ["/bin/cat", "/testdir/rel.txt", "/home/test.txt"]) == "x\nlol\n"
    assert not any(line.startswith(SNAPSHOT) for line in b.log[1:3])  # WORKDIR takes no snapshot


def test_relative_workdirs_chain_14(daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nWORKDIR /a\nWORKDIR b\nWORKDIR c\nRUN pwd\nWORKDIR /home\nRUN pwd\n")
    assert "/a/b/c\n" in b.log and b.log.index("/a/b/c\n") < b.log.index("/home\n")


def test_workdir_copy_json_form_and_cmd_15_16(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f'FROM {base}\nWORKDIR /etc\nCOPY ["test.txt", "."]\nCMD cat /etc/test.txt\n',
              files={"test.txt": "lol\n"})
    assert run(api, daemon, b.image_id) == "lol\n"
    b = built(daemon, tmp_path, f"FROM {base}\nWORKDIR /etc\nCMD echo $(pwd)\n")
    assert run(api, daemon, b.image_id) == "/etc\n"
    assert api.get(f"/images/{b.image_id}/inspect").json()["workdir"] == "/etc"


def test_copy_destinations_17_18_19_20_39(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nCOPY test.txt /root/\nCOPY test.txt /root/lol/\n"
              "COPY test.txt /root/deep/er/file.txt\nCOPY test.txt /root/test.txt\nCOPY *.txt /root/glob/\n"
              "RUN echo one > /root/run1\nRUN echo two > /root/run2\n",
              files={"test.txt": "lol\n", "test2.txt": "lel\n"})
    assert len(b.snapshots) == 7
    out = run(api, daemon, b.image_id, ["/bin/cat", "/root/test.txt", "/root/lol/test.txt", "/root/deep/er/file.txt",
                                        "/root/glob/test.txt", "/root/glob/test2.txt", "/root/run1", "/root/run2"])
    assert out == "lol\nlol\nlol\nlol\nlel\none\ntwo\n"
    assert builders(api) == []


def test_copy_into_a_symlinked_directory_lands_in_its_target_21(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nRUN mkdir /etc/testdir && ln -s /etc/testdir /etc/symbolic_testdir\n"
              "COPY test.txt /etc/symbolic_testdir/\n", files={"test.txt": "lol\n"})
    assert run(api, daemon, b.image_id, ["/bin/cat", "/etc/testdir/test.txt"]) == "lol\n"


def test_copy_of_a_directory_copies_its_contents_as_root(api, daemon, base, tmp_path):
    (tmp_path / "src/sub").mkdir(parents=True)
    (tmp_path / "src/sub/a").write_text("a\n")
    (tmp_path / "src/link").symlink_to("sub/a")
    b = built(daemon, tmp_path, f"FROM {base}\nCOPY src /opt/\nCOPY --chown=user1:user1 src/sub /home/user1/\n")
    out = run(api, daemon, b.image_id, ["/bin/sh", "-c", "cat /opt/sub/a /opt/link; stat -c '%U %n' /opt/sub/a "
                                        "/home/user1/a; readlink /opt/link"])
    assert out == "a\na\nroot /opt/sub/a\nuser1 /home/user1/a\nsub/a\n"


def test_cmd_is_exact_and_the_default_cmd_is_inherited_22_50(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f'FROM {base}\nCMD  echo -n "lol"\n')
    assert run(api, daemon, b.image_id) == "lol"
    b = built(daemon, tmp_path, f"FROM {base}\nRUN true\n")
    assert api.get(f"/images/{b.image_id}/inspect").json()["cmd"] == ["/bin/sh"]  # Linux base default
    assert builders(api) == []


# --- ENV and ARG -----------------------------------------------------------------------------------------------------


def test_env_notations_23_24_26(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f'FROM {base}\nENV TEST1=lol\nENV TEST2="testing test"\nENV TEST3=test\\ test\n'
              'ENV TEST4="\\$5\\$2Fun7BK4thgtd4ao\\$j1kidg9P"\nRUN env | grep ^TEST | sort\n'
              'ENV TEST4="a new test value"\nRUN env | grep ^TEST4\n')  # busybox has no printenv
    assert "TEST1=lol\nTEST2=testing test\nTEST3=test test\nTEST4=$5$2Fun7BK4thgtd4ao$j1kidg9P\n" in b.log
    assert "TEST4=a new test value\n" in b.log
    env = api.get(f"/images/{b.image_id}/inspect").json()["env"]
    assert sorted(env) == ["TEST1=lol", "TEST2=testing test", "TEST3=test test", "TEST4=a new test value"]


def test_a_daemon_left_by_run_does_not_break_the_build_25(api, daemon, base, tmp_path):
    built(daemon, tmp_path, f"FROM {base}\nRUN sh -c 'sleep 1000 &'\nRUN echo after\n")
    assert builders(api) == []
    assert not [c for c in api.get("/containers/list").json() if (c["name"] or "").startswith("builder_")]


def test_arg_before_from_27(daemon, base, tmp_path):
    dockerfile = "ARG testvar\nFROM ${testvar:-doesnotexist}\n"
    b = build(daemon, tmp_path, dockerfile)
    assert b.log[-1] == "error: could not find image doesnotexist"
    assert b.close == (1011, "image build failed", "")
    assert built(daemon, tmp_path, dockerfile, buildargs={"testvar": base}).ok


def test_only_arg_may_precede_from_28_34_54(daemon, tmp_path):
    cases = {
        "ENV testvar=lol\nFROM x\n": "'ENV testvar=lol' not permitted before a FROM instruction",
        'FROM x\nARG TEST-VAR="this should fail"\n':
            'ENV/ARG variable name is invalid on line: ARG TEST-VAR="this should fail"',
        "FROM x\nENV TEST-VAR=1\n": "ENV/ARG variable name is invalid on line: ENV TEST-VAR=1",
        'FROM x\nRUN echo "lol" \n  "this should faile because we omitted the \'\\\' above"\n':
            "error in '  \"this should faile because we omitted the '\\' above\"': invalid instruction",
    }
    for dockerfile, error in cases.items():
        b = build(daemon, tmp_path, dockerfile)
        assert b.stream.frames[0] == '{"msg_type":"starting","message":"","data":""}'
        assert b.log == [error], dockerfile
        assert b.close == (1011, "failed to process Dockerfile", "")


def test_arg_values_29_30_37(daemon, base, tmp_path):
    dockerfile = (f'FROM {base}\nARG testvar\nRUN echo "lol:$testvar"\nRUN echo "lol:${{testvar:-empty}}"\n'
                  'ARG testvar1=testval1\nARG testvar2="test val2"\nRUN echo "$testvar1:$testvar2"\n'
                  'ARG reset=should_be_overwritten\nARG reset\nRUN echo -n "empty:$reset"\n')
    b = built(daemon, tmp_path, dockerfile)
    lines = [line for line in b.log if line.startswith(("lol:", "testval1", "empty:"))]
    assert lines == ["lol:\n", "lol:empty\n", "testval1:test val2\n", "empty:"]
    b = built(daemon, tmp_path, dockerfile, buildargs={"testvar": "testval", "testvar1": "newval1",
                                                       "testvar2": "newval2"})
    assert "lol:testval\n" in b.log and b.log.count("lol:testval\n") == 2 and "newval1:newval2\n" in b.log


def test_buildargs_apply_after_their_arg_31_35(daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nUSER ${{username:-nobody}}\nRUN whoami\nARG username\n"
              "USER $username\nRUN whoami\nARG TESTVAR=user1\nUSER $TESTVAR\nRUN echo \"$(id)\"\n",
              buildargs={"username": "user1"})
    lines = [line for line in b.log if not line.startswith(("Step", SNAPSHOT))]
    # busybox's id; the primary group is listed under groups= too, as initgroups(3) gives it
    assert lines == ["nobody\n", "user1\n", "uid=1000(user1) gid=1000(user1) groups=1000(user1)\n"]


def test_env_beats_arg_32_33_38(api, daemon, base, tmp_path):
    dockerfile = f"FROM {base}\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\n"
    assert "v1.0.0\n" in built(daemon, tmp_path, dockerfile, buildargs={"CONT_IMG_VER": "v2.0.1"}).log
    assert "v1.0.0\n" in built(daemon, tmp_path, dockerfile).log
    dockerfile = f"FROM {base}\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${{CONT_IMG_VER:-v1.0.0}}\nCMD echo $CONT_IMG_VER\n"
    b = built(daemon, tmp_path, dockerfile)
    assert [line for line in b.log if not line.startswith("Step")] == []  # no RUN: an empty log
    assert run(api, daemon, b.image_id) == "v1.0.0\n"
    b = built(daemon, tmp_path, dockerfile, buildargs={"CONT_IMG_VER": "v.2.0.1"})
    assert run(api, daemon, b.image_id) == "v.2.0.1\n"


def test_arg_in_copy_36(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f'FROM {base}\nARG TESTVAR="test.txt"\nCOPY $TESTVAR /root/\n',
              files={"test.txt": "lol\n"})
    assert run(api, daemon, b.image_id, ["/bin/cat", "/root/test.txt"]) == "lol\n"


def test_comment_after_env_fails_at_build_time_56(daemon, base, tmp_path):
    line = 'ENV TEST="something" # You cannot make comments like this.'
    b = build(daemon, tmp_path, f"FROM {base}\n{line}\n")
    assert b.log == [f"Step 1/2 : FROM {base}", f"Step 2/2 : {line}", f"failed environment substition of: {line}"]
    assert b.close == (1011, "image build failed", "")


# --- quiet, blank lines, snapshots, failures -------------------------------------------------------------------------


def test_quiet_sends_only_snapshots_40_41(daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\n\nRUN echo hello \\\n    world\n\nUSER nobody\nCMD /etc/rc\n",
              quiet="true")
    assert len(b.log) == 1 and b.log[0].startswith(SNAPSHOT)


def test_containers_from_build_snapshots_42(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f"FROM {base}\nCOPY test.txt /etc/\nRUN echo -n 'some text' > /etc/test2.txt\n"
              "RUN rm /etc/test2.txt\n", files={"test.txt": "lol\n"}, tag="test:latest")
    copy_snap, run_snap, _ = b.snapshots
    assert run(api, daemon, f"{b.image_id}{copy_snap}", ["/bin/cat", "/etc/test.txt"]) == "lol\n"
    assert "No such file or directory" in run(api, daemon, f"{b.image_id}{copy_snap}", ["/bin/cat", "/etc/test2.txt"])
    assert run(api, daemon, f"test:latest{run_snap}", ["/bin/cat", "/etc/test2.txt"]) == "some text"


def test_a_failing_run_stops_the_build_51(api, daemon, base, tmp_path):
    b = build(daemon, tmp_path, f"FROM {base}\nRUN ls notexist\nRUN echo should not run\n")
    assert b.log[-1] == "The command '/bin/sh -c ls notexist' returned a non-zero code: 1"
    assert "should not run\n" not in b.log and "Step 3/3 : RUN echo should not run" not in b.log
    assert b.close == (1011, "image build failed", "")
    assert api.get(f"/images/{b.image_id}/inspect").status_code == 404 and builders(api) == []


def test_failed_build_is_kept_without_cleanup_43_52(api, daemon, base, tmp_path):
    name = f"failing{secrets.token_hex(2)}"
    b = build(daemon, tmp_path, f"FROM {base}\nRUN echo test > /etc/testing\nCOPY test.txt /etc/\n"
              "RUN echo partial > /etc/partial; ls notexist\n", files={"test.txt": "lol\n"}, cleanup=False,
              tag=f"{name}:v1")
    run_snap, copy_snap = b.snapshots
    assert b.close == (1011, "image build failed", copy_snap)
    image = api.get(f"/images/{name}:failed/inspect").json()
    assert image["id"] == b.image_id and builders(api) == []
    assert run(api, daemon, b.image_id, ["/bin/cat", "/etc/testing", "/etc/partial"]) == "test\npartial\n"
    assert run(api, daemon, f"{b.image_id}{copy_snap}", ["/bin/cat", "/etc/test.txt"]) == "lol\n"
    resumed = built(daemon, tmp_path / "resume", f"FROM {name}:failed{run_snap}\nRUN cat /etc/testing\n")
    assert "test\n" in resumed.log
    no_snap = build(daemon, tmp_path, f"FROM {base}\nRUN false\n", cleanup=False)
    assert no_snap.close == (1011, "image build failed", "no snapshots available")
    assert api.get(f"/images/{no_snap.image_id}/inspect").json()["tag"] == "failed"


def test_unknown_parent_creates_nothing_53_55(api, daemon, tmp_path):
    before = {i["id"] for i in api.get("/images/list").json()}
    for cleanup in (False, True):
        b = build(daemon, tmp_path, "FROM nonexisting\nRUN true\n", cleanup=cleanup)
        assert b.log == ["Step 1/2 : FROM nonexisting", "error: could not find image nonexisting"]
        assert b.close == (1011, "image build failed", "")
    assert {i["id"] for i in api.get("/images/list").json()} == before and builders(api) == []
    b = build(daemon, tmp_path, "FROM buildbase@abcdefabcdef\n")
    assert b.log[-1] == "error: invalid snapshot @abcdefabcdef"


def test_user_supplied_parent_image(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, "FROM nonexisting\nRUN echo ok\n", container_config={"image": base}, quiet="true")
    assert b.log[0] == f"Using user-supplied parent image: '{base}'"
    assert api.get(f"/images/{b.image_id}/inspect").json()["instructions"][0] == ["FROM nonexisting", ""]


# --- prune with built chains (a daemon of its own: a prune would take other modules' images) ------------------------


def test_prune_of_built_chains_9_10_11_12(tmp_path):
    # A short path of its own: runc's console socket paths must fit a sockaddr_un.
    with tempfile.TemporaryDirectory(prefix="kleened-prune-") as tmp, running_daemon(Path(tmp)) as d, \
            d.client() as api:
        base_id = create_image(d, tag="prunebase")
        parent = built(d, tmp_path / "p", "FROM prunebase\nRUN true\n").image_id
        child = built(d, tmp_path / "c", f"FROM {parent}\nRUN true\n", tag="child").image_id
        leaf = built(d, tmp_path / "l", "FROM prunebase\nRUN true\n").image_id
        used = built(d, tmp_path / "u", "FROM prunebase\nRUN true\n").image_id
        cid = api.post("/containers/create", json={"image": used, "network_driver": "host"}).json()["id"]
        assert api.post("/images/prune?all=false").json() == [leaf]  # the untagged parent of a tagged child stays
        assert api.post("/images/prune?all=true").json() == [child, parent]  # used images and ancestors stay
        api.delete(f"/containers/{cid}")
        assert api.post("/images/prune?all=true").json() == [used, base_id]
        assert unreferenced_layers(d) == set()


# --- hostile inputs ------------------------------------------------------------------------------------------------


def test_copy_from_outside_the_context_is_refused(daemon, base, tmp_path):
    b = build(daemon, tmp_path, f"FROM {base}\nCOPY ../../etc/passwd x\n")
    assert b.log[-1] == "COPY failed: forbidden path outside the build context: ../../etc/passwd"
    assert b.close == (1011, "image build failed", "")
    (tmp_path / "escape").symlink_to("/etc")  # a context symlink is followed inside the context only
    b = build(daemon, tmp_path, f"FROM {base}\nCOPY escape/passwd x\n")
    assert b.log[-1].startswith("COPY failed: file not found in build context")


def test_copy_through_symlinks_never_writes_to_the_host(api, daemon, base, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "victim").write_text("host file\n")
    b = built(daemon, tmp_path / "ctx", f"FROM {base}\nRUN ln -s {host} /abs && ln -s ../../../../../../..{host} /rel"
              f" && ln -s {host}/victim /etc/victim\nCOPY test.txt /abs/\nCOPY test.txt /rel/sub/\n"
              "COPY test.txt /etc/victim\n", files={"test.txt": "lol\n"})
    assert sorted(p.name for p in host.iterdir()) == ["victim"]
    assert (host / "victim").read_text() == "host file\n"
    out = run(api, daemon, b.image_id, ["/bin/cat", f"{host}/test.txt", f"{host}/sub/test.txt", "/etc/victim"])
    assert out == "lol\nlol\nlol\n"  # the links were followed inside the image; the last one was replaced


def test_command_substitution_is_never_run_on_the_host(api, daemon, base, tmp_path):
    marker = tmp_path / f"pwned{secrets.token_hex(3)}"
    b = built(daemon, tmp_path / "ctx", f"FROM {base}\nENV X=$(touch {marker})\nENV Y=`touch {marker}`\n"
              f"ARG Z=$(touch {marker})\nRUN echo \"$X|$Y|$Z\"\n")
    assert not marker.exists()
    assert f"$(touch {marker})|`touch {marker}`|$(touch {marker})\n" in b.log
    assert f"X=$(touch {marker})" in api.get(f"/images/{b.image_id}/inspect").json()["env"]


def test_huge_build_args_are_clear_errors(daemon, base, tmp_path):
    b = build(daemon, tmp_path, f"FROM {base}\nARG BIG\nRUN echo ${{#BIG}}\n", buildargs={"BIG": "x" * 200_000})
    assert b.log[-1] == "error: build variable BIG is larger than 131071 bytes: a process cannot receive it"
    b = build(daemon, tmp_path, f"FROM {base}\nARG BIG\nENV A=$BIG$BIG\n", buildargs={"BIG": "x" * 600_000})
    assert b.log[-1] == "expanded value is larger than 1048576 bytes in: ENV A=$BIG$BIG"
    b = build(daemon, tmp_path, f"FROM {base}\n", buildargs={"BIG": "x" * 2_000_000})
    assert b.stream.frames == [] and b.stream.close_code == 1009  # larger than a client frame may be


def test_unterminated_quotes_are_clear_errors(daemon, base, tmp_path):
    b = build(daemon, tmp_path, f'FROM {base}\nENV A="abc\n')
    assert b.log[-1] == 'failed environment substition of: ENV A="abc'
    b = build(daemon, tmp_path, f'FROM {base}\nCOPY "a b /x\n')
    assert b.log[-1].startswith("""error in 'COPY "a b /x': COPY requires at least two arguments""")


# --- extensions: ENTRYPOINT, EXPOSE, LABEL, .dockerignore, networks ------------------------------------------------


def test_entrypoint_expose_and_labels_are_stored(api, daemon, base, tmp_path):
    b = built(daemon, tmp_path, f'FROM {base}\nENTRYPOINT ["/bin/echo"]\nEXPOSE 80 53/udp\nLABEL a=1 "b c"="d e"\n')
    image = api.get(f"/images/{b.image_id}/inspect").json()
    assert (image["entrypoint"], image["exposed_ports"], image["labels"]) == (
        ["/bin/echo"], ["80/tcp", "53/udp"], {"a": "1", "b c": "d e"})
    child = built(daemon, tmp_path, f"FROM {b.image_id}\nEXPOSE 80\nLABEL a=2\n")
    image = api.get(f"/images/{child.image_id}/inspect").json()
    assert (image["exposed_ports"], image["labels"]) == (["80/tcp", "53/udp"], {"a": "2", "b c": "d e"})


def test_dockerignore_hides_context_files(api, daemon, base, tmp_path):
    files = {".dockerignore": "secret.txt\n*.log\n!keep.log\nsub/\n", "secret.txt": "s", "a.log": "a",
             "keep.log": "k", "sub/x": "x", "plain": "p"}
    b = built(daemon, tmp_path, f"FROM {base}\nCOPY . /ctx/\nRUN ls -A /ctx\n", files=files)
    assert ".dockerignore\nDockerfile\nkeep.log\nplain\n" in "".join(b.log)
    b = build(daemon, tmp_path, f"FROM {base}\nCOPY secret.txt /\n")
    assert b.log[-1] == ("COPY failed: file not found in build context or excluded by .dockerignore: secret.txt")


def test_build_container_joins_the_build_networks(api, daemon, base, tmp_path):
    byte = int(daemon.prefix[-2:], 16) % 200 + 20
    name = f"bn{secrets.token_hex(2)}"
    net = {"name": name, "type": "bridge", "gateway": "", "gateway6": "", "icc": True, "interface": "",
           "internal": False, "nat": "", "subnet": f"10.{byte}.250.0/24", "subnet6": ""}
    assert api.post("/networks/create", json=net).status_code == 201
    try:
        endpoint = {"container": "", "network": name, "ip_address": "<auto>", "ip_address6": "<auto>"}
        b = built(daemon, tmp_path, f"FROM {base}\nRUN ip -4 -o addr show\n", networks=[endpoint],
                  container_config={"network_driver": "ipnet"})
        assert f"10.{byte}.250." in "".join(b.log)
        assert api.get(f"/networks/{name}/inspect").json()["network_endpoints"] == []
    finally:
        api.delete(f"/networks/{name}")
    b = build(daemon, tmp_path, f"FROM {base}\nRUN true\n", networks=[{"container": "", "network": "nosuchnet"}],
              container_config={"network_driver": "ipnet"})
    assert b.log[-1] == "error: network not found" and b.close[0] == 1011 and builders(api) == []


# --- extensions: the build cache -----------------------------------------------------------------------------------



def test_unchanged_steps_are_cached_and_a_changed_file_invalidates_the_rest(api, daemon, base, tmp_path):
    dockerfile = (f"FROM {base}\nRUN echo first; echo 1 > /one\nWORKDIR /work\nCOPY a.txt .\n"
                  "RUN echo second; cat a.txt > /two\nCMD cat /two\n")
    first = built(daemon, tmp_path, dockerfile, files={"a.txt": "v1\n"}, cache=True)
    assert CACHED not in first.log and "first\n" in first.log
    again = built(daemon, tmp_path, dockerfile, cache=True)
    assert again.log.count(CACHED) == 3 and "first\n" not in again.log and "second\n" not in again.log
    assert len(again.snapshots) == 3 and run(api, daemon, again.image_id) == "v1\n"
    (tmp_path / "a.txt").write_text("v2\n")
    changed = built(daemon, tmp_path, dockerfile, cache=True)
    assert changed.log.count(CACHED) == 1 and "first\n" not in changed.log and "second\n" in changed.log
    assert run(api, daemon, changed.image_id) == "v2\n"
    assert CACHED not in built(daemon, tmp_path, dockerfile).log  # upstream's behaviour unless asked


def test_the_cache_never_outlives_the_images_holding_its_layers(api, daemon, base, tmp_path):
    dockerfile = f"FROM {base}\nRUN echo {secrets.token_hex(4)} > /f; echo ran\n"
    first = built(daemon, tmp_path, dockerfile, cache=True)
    assert api.delete(f"/images/{first.image_id}").status_code == 200
    again = built(daemon, tmp_path, dockerfile, cache=True)
    assert CACHED not in again.log and "ran\n" in again.log
    assert built(daemon, tmp_path, dockerfile, cache=True).log.count(CACHED) == 1
    failed = build(daemon, tmp_path / "f", f"FROM {base}\nRUN echo kept > /k\nRUN false\n", cache=True, cleanup=False)
    retry = build(daemon, tmp_path / "f", f"FROM {base}\nRUN echo kept > /k\nRUN true\n", cache=True)
    assert failed.close[0] == 1011 and retry.ok and retry.log.count(CACHED) == 1  # a :failed image keeps its layers


# --- extensions: multi-stage builds --------------------------------------------------------------------------------


def test_multi_stage_build(api, daemon, base, tmp_path):
    before = unreferenced_layers(daemon)
    b = built(daemon, tmp_path, f"FROM {base} AS builder\nRUN echo built > /artifact\nWORKDIR /src\n"
              "FROM builder AS tested\nRUN cat /artifact && pwd\n"
              f"FROM {base}\nCOPY --from=builder /artifact /opt/\nCOPY --from=1 /artifact /opt/again\n"
              f"COPY --from={base} /etc/hostname /opt/\nRUN cat /opt/artifact /opt/again /opt/hostname\n")
    text = "".join(b.log)  # one process's writes may come in several frames
    assert "built\n/src\n" in text and "built\nbuilt\nbusybox\n" in text
    image = api.get(f"/images/{b.image_id}/inspect").json()
    assert image["workdir"] == "/" and len(image["instructions"]) == 10
    assert builders(api) == [] and unreferenced_layers(daemon) == before  # earlier stages' layers are gone
    b = build(daemon, tmp_path, f"FROM {base} AS one\nFROM {base}\nCOPY --from=one /nothing /\n")
    assert b.log[-1].startswith("COPY failed: file not found") and builders(api) == []


def test_multi_stage_with_the_cache_keeps_earlier_stages(api, daemon, base, tmp_path):
    dockerfile = f"FROM {base} AS builder\nRUN echo built > /artifact\nFROM {base}\nCOPY --from=builder /artifact /\n"
    first = built(daemon, tmp_path, dockerfile, cache=True)
    untagged = [i for i in api.get("/images/list").json() if i["id"] != first.image_id and not i["name"]]
    assert untagged  # the builder stage, kept as an untagged image (prune removes it)
    again = built(daemon, tmp_path, dockerfile, cache=True)
    assert again.log.count(CACHED) == 2 and run(api, daemon, again.image_id, ["/bin/cat", "/artifact"]) == "built\n"


# --- extensions: uploaded contexts ---------------------------------------------------------------------------------


def test_uploaded_context(api, daemon, base, tmp_path):
    files = {"Dockerfile": f"FROM {base}\nCOPY . /ctx/\nRUN ls -A /ctx\n", "a.txt": "a\n", "secret": "s",
             ".dockerignore": "secret\n", "big.bin": secrets.token_bytes(300_000)}
    b = upload(daemon, tar_of(files))
    assert b.ok and ".dockerignore\nDockerfile\na.txt\nbig.bin\n" in "".join(b.log)
    b = upload(daemon, tar_of(files), end='{"type":"context-end"}')
    assert b.ok
    assert not list((daemon.state_root / "tmp").glob("build-context-*"))


def test_hostile_uploads_are_refused(api, daemon, base):
    evil = tarfile.TarInfo("../evil")
    b = upload(daemon, tar_of({"Dockerfile": f"FROM {base}\n"}, [evil]))
    assert b.log[-1].startswith("error: could not unpack the build context: refusing archive member '../evil'")
    assert b.close == (1011, "failed to receive the build context", "")
    b = upload(daemon, b"not a tar at all")
    assert b.close[1] == "failed to receive the build context"
    assert not list((daemon.state_root / "tmp").glob("build-context-*"))


# --- a client that goes away ---------------------------------------------------------------------------------------


def test_a_disconnect_mid_build_leaves_nothing(api, daemon, base, tmp_path):
    images_before = {i["id"] for i in api.get("/images/list").json()}
    layers_before = unreferenced_layers(daemon)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN echo x > /x\nRUN echo started; sleep 60\n")
    with connect(daemon, "/images/build") as ws:
        ws.send(json.dumps(config(tmp_path, cleanup=False)))
        image_id = json.loads(ws.recv(timeout=30))["data"]
        try:
            while ws.recv(timeout=30) != "started\n":
                pass
        except ConnectionClosed:
            pytest.fail("the build ended early")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (builders(api) or unreferenced_layers(daemon) != layers_before):
        time.sleep(0.1)
    assert builders(api) == [] and unreferenced_layers(daemon) == layers_before
    assert {i["id"] for i in api.get("/images/list").json()} == images_before
    assert api.get(f"/images/{image_id}/inspect").status_code == 404


def test_concurrent_builds(api, daemon, base, tmp_path):
    results: list[Build] = []
    threads = [threading.Thread(target=lambda n=n: results.append(built(daemon, tmp_path / str(n), f"FROM {base}\n"
                                f"RUN echo {n} > /n\nCOPY f /\n", files={"f": str(n)}))) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.image_id for r in results}) == 3
    for r in results:
        assert run(api, daemon, r.image_id, ["/bin/cat", "/n"]) in ("0\n", "1\n", "2\n")


def test_long_lines_are_clipped_in_the_log(daemon, base, tmp_path):
    b = build(daemon, tmp_path, f"FROM {base}\nRUN false {'x' * 200_000}\n")
    assert b.close[0] == 1011 and all(len(line) <= 64 * 1024 for line in b.log)
    assert b.log[1].startswith("Step 2/2 : RUN false xxx") and b.log[1].endswith("...")


def test_entrypoint_is_applied_to_containers_of_the_image(api, daemon, base, tmp_path):
    (tmp_path / "Dockerfile").write_text(f'FROM {base}\nENTRYPOINT ["/bin/echo", "entry"]\nCMD ["default"]\n')
    stream = run_stream(daemon, "/images/build", {"context": str(tmp_path), "container_config": {}, "quiet": True})
    assert stream.close_code == 1000, stream
    image = stream.close_reason["data"]
    assert api.get(f"/images/{image}/inspect").json()["entrypoint"] == ["/bin/echo", "entry"]
    outputs = []
    for cmd in ([], ["given"]):
        cid = api.post("/containers/create", json={"image": image, "cmd": cmd, "network_driver": "host"}).json()["id"]
        eid = api.post("/exec/create", json={"container_id": cid}).json()["id"]
        outputs.append(exec_stream(daemon, eid).text)
        api.delete(f"/containers/{cid}")
    assert outputs == ["entry default\n", "entry given\n"]
    api.delete(f"/images/{image}")
