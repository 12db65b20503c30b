"""`cp` against a real kleened: round trips through klee (both directions, running and stopped
containers), symlinks that point outside the container root (read and write), `-` tar streams,
and the errors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.cli import run_klee
from tests.daemon import running_daemon
from tests.invariants import assert_clean
from tests.wsapi import connect, create_image

BIG = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def image(daemon) -> str:
    return create_image(daemon, tag=f"cpbox:{secrets.token_hex(3)}")


@pytest.fixture
def klee(daemon):
    return lambda *args, **kw: run_klee(daemon.host, *args, **kw)


def create(api, image: str, cmd: list[str] | None = None) -> str:
    r = api.post("/containers/create", json={"image": image, "cmd": cmd or ["/bin/sleep", "300"],
                                            "network_driver": "disabled", "name": f"cp{secrets.token_hex(4)}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def remove(api, cid: str) -> None:
    api.post(f"/containers/{cid}/stop")
    assert api.delete(f"/containers/{cid}").status_code == 200


def make_tree(root: Path) -> Path:
    """A tree with modes, nested directories, relative and absolute symlinks, and a 100 MB file."""
    tree = root / "tree"
    (tree / "sub/deeper").mkdir(parents=True)
    (tree / "plain.txt").write_text("hello\n")
    os.chmod(tree / "plain.txt", 0o640)
    (tree / "shared").write_text("group and others may write\n")
    os.chmod(tree / "shared", 0o4777)  # setuid and o+w: kept both ways, as docker cp does
    (tree / "sub/run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(tree / "sub/run.sh", 0o755)
    os.chmod(tree / "sub/deeper", 0o700)
    (tree / "sub/deeper/x").write_bytes(b"\0\1\2")
    os.symlink("sub/run.sh", tree / "rel-link")
    os.symlink("/etc/passwd", tree / "abs-link")
    block = hashlib.sha256(b"kleene").digest() * (1024 * 1024 // 32)
    with open(tree / "big.bin", "wb") as f:
        for i in range(BIG // len(block)):
            f.write(block[:-4] + i.to_bytes(4, "big"))
    return tree


def describe(tree: Path) -> dict[str, tuple]:
    """Every entry under `tree`: type and mode bits, link target or content hash."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(tree))
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest)
    return result


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("cp-src"))


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_round_trip_of_a_tree(api, daemon, klee, image, tree, tmp_path, running):
    cid = create(api, image)
    try:
        if running:
            assert klee("start", "-d", cid).returncode == 0
        r = klee("cp", str(tree), f"{cid}:/data")
        assert r.returncode == 0, r
        out = tmp_path / "back"
        r = klee("cp", f"{cid}:/data", str(out))
        assert r.returncode == 0, r
        assert describe(out) == describe(tree)
        # the container sees what was copied, with root as owner by default
        listing = klee("exec", cid, "/bin/sh", "-c", "stat -c '%u:%g %a' /data/plain.txt; sha256sum /data/big.bin")
        assert "0:0 640" in listing.stdout, listing
        assert describe(tree)["big.bin"][3] in listing.stdout
        # into an existing directory: the source directory goes inside it; with /. only its contents
        assert klee("cp", str(tree / "sub"), f"{cid}:/data").returncode == 0
        assert klee("cp", f"{tree / 'sub'!s}/.", f"{cid}:/tmp").returncode == 0
        both = klee("exec", cid, "/bin/sh", "-c", "ls /data/sub /tmp")
        assert "run.sh" in both.stdout and "deeper" in both.stdout, both
    finally:
        remove(api, cid)
    assert not (daemon.state_root / "containers" / cid).exists()


def test_file_rules_and_trailing_slashes(api, klee, image, tmp_path):
    cid = create(api, image)
    try:
        src = tmp_path / "note"
        src.write_text("note\n")
        assert klee("cp", str(src), f"{cid}:/etc/renamed").returncode == 0  # a new name
        assert klee("cp", str(src), f"{cid}:/etc/").returncode == 0  # into the directory
        missing_dir = klee("cp", str(src), f"{cid}:/nowhere/")
        assert missing_dir.returncode != 0 and missing_dir.stderr.count("\n") == 1, missing_dir
        assert "does not exist" in missing_dir.stderr
        assert klee("cp", f"{cid}:/etc/renamed", str(tmp_path / "got")).returncode == 0
        assert (tmp_path / "got").read_text() == "note\n"
        (tmp_path / "adir").mkdir()
        assert klee("cp", f"{cid}:/etc/note", str(tmp_path / "adir")).returncode == 0
        assert (tmp_path / "adir/note").read_text() == "note\n"
        to_file = klee("cp", f"{cid}:/etc", str(tmp_path / "got"))
        assert to_file.returncode != 0 and "cannot copy a directory to a file" in to_file.stderr
        # a link SRC is copied as a link; -L copies what it points to
        assert klee("cp", f"{cid}:/bin/sh", str(tmp_path / "sh-link")).returncode == 0
        assert os.readlink(tmp_path / "sh-link") == "/bin/busybox"
        assert klee("cp", "-L", f"{cid}:/bin/sh", str(tmp_path / "sh-file")).returncode == 0
        assert (tmp_path / "sh-file").stat().st_size > 100_000
    finally:
        remove(api, cid)


def test_tar_on_stdin_and_stdout(api, daemon, image, tmp_path):
    cid = create(api, image)
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("from-stdin/a.txt")
            info.size, info.mode, info.uid = 3, 0o600, 1000
            tar.addfile(info, io.BytesIO(b"abc"))
        klee = [sys.executable, "-m", "klee", "--host", daemon.host]
        env = {**os.environ, "HOME": "/nonexistent"}
        put = subprocess.run([*klee, "cp", "-", f"{cid}:/root"], input=buf.getvalue(), capture_output=True, env=env,
                             timeout=120)
        assert put.returncode == 0, put
        got = subprocess.run([*klee, "cp", f"{cid}:/root/from-stdin", "-"], capture_output=True, env=env, timeout=120)
        assert got.returncode == 0, got
        with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert set(members) == {"from-stdin", "from-stdin/a.txt"}
            assert members["from-stdin/a.txt"].uid == 1000  # a raw tar keeps its owners
            assert tar.extractfile("from-stdin/a.txt").read() == b"abc"
        not_dir = subprocess.run([*klee, "cp", "-", f"{cid}:/etc/passwd"], input=buf.getvalue(), capture_output=True,
                                 env=env, timeout=120)
        assert not_dir.returncode != 0 and b"must be a directory" in not_dir.stderr
    finally:
        remove(api, cid)


@pytest.fixture
def host_secret(tmp_path_factory) -> Path:
    """A directory on the host, outside every container root, holding a secret."""
    secret = tmp_path_factory.mktemp("cp-host-secret")
    (secret / "secret").write_text("host only\n")
    return secret


def test_symlinks_never_leave_the_container_root(api, daemon, klee, image, host_secret, tmp_path):
    cid = create(api, image)
    try:
        depth = "../" * 20
        # links made inside the container to the host directory: absolute and through ..
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, target in (("abs", str(host_secret)), ("up", f"{depth}{str(host_secret).lstrip('/')}")):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        klee_argv = [sys.executable, "-m", "klee", "--host", daemon.host]
        env = {**os.environ, "HOME": "/nonexistent"}
        put = subprocess.run([*klee_argv, "cp", "-", f"{cid}:/"], input=buf.getvalue(), capture_output=True, env=env,
                             timeout=120)
        assert put.returncode == 0, put
        for link in ("abs", "up"):
            # reading through the link: resolved inside the container, where nothing is there
            r = api.get(f"/containers/{cid}/archive/stat", params={"path": f"/{link}/secret"})
            assert r.status_code == 404, r.text
            out = klee("cp", f"{cid}:/{link}/.", str(tmp_path / f"read-{link}"))
            assert out.returncode != 0 and out.stderr.count("\n") == 1, out
            assert not (tmp_path / f"read-{link}").exists()
            # writing through the link: into the container (or refused), never into the host directory
            note = tmp_path / "pwned"
            note.write_text("x")
            assert klee("cp", str(note), f"{cid}:/{link}/").returncode != 0
            stream = _put(daemon, cid, f"/{link}", _tar({"pwned": b"x"}))
            assert stream[0] == 1011, stream
        # a tar whose own symlink points out, then a file through it: lands inside the container
        hostile = io.BytesIO()
        with tarfile.open(fileobj=hostile, mode="w") as tar:
            info = tarfile.TarInfo("door")
            info.type, info.linkname = tarfile.SYMTYPE, str(host_secret)
            tar.addfile(info)
            data = tarfile.TarInfo("door/pwned")
            data.size = 1
            tar.addfile(data, io.BytesIO(b"x"))
        assert _put(daemon, cid, "/tmp", hostile.getvalue())[0] == 1000
        dotdot = _tar({"../../../pwned": b"x"})
        code, reason = _put(daemon, cid, "/tmp", dotdot)
        assert code == 1011 and ".." in reason["message"]
        assert sorted(p.name for p in host_secret.iterdir()) == ["secret"]
        inside = klee("exec", cid, "/bin/sh", "-c", f"cat /tmp/{str(host_secret).lstrip('/')}/pwned")
        assert "x" in inside.lines, inside
    finally:
        remove(api, cid)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _put(daemon, cid: str, path: str, data: bytes) -> tuple[int, dict]:
    from websockets.exceptions import ConnectionClosed

    with connect(daemon, f"/containers/{cid}/archive/put") as ws:
        ws.send(json.dumps({"path": path}))
        try:
            ws.recv(timeout=60)
            ws.send(data)
            ws.send(b"")
            while True:
                ws.recv(timeout=60)
        except ConnectionClosed:
            pass
        return ws.close_code, json.loads(ws.close_reason)


def test_errors_are_one_line(api, daemon, klee, image, tmp_path):
    cid = create(api, image)
    try:
        assert api.get(f"/containers/{cid}/archive/stat").status_code == 422
        r = api.get(f"/containers/{cid}/archive/stat", params={"path": "/nonexistent"})
        assert r.status_code == 404 and "no such file or directory" in r.json()["message"]
        assert api.get("/containers/nosuchcontainer/archive/stat", params={"path": "/"}).status_code == 404
        st = api.get(f"/containers/{cid}/archive/stat", params={"path": "/etc/passwd"}).json()
        assert st["name"] == "passwd" and stat.S_ISREG(st["mode"]) and st["size"] > 0
        for args in (("nosuch:/etc", str(tmp_path)), (f"{cid}:/nonexistent", str(tmp_path)),
                     (str(tmp_path / "missing"), f"{cid}:/tmp"), (str(tmp_path), str(tmp_path))):
            r = klee("cp", *args)
            assert r.returncode != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r
        code, reason = _put(daemon, cid, "/nonexistent", _tar({"a": b"a"}))
        assert code == 1011 and "no such directory" in reason["message"]
    finally:
        remove(api, cid)


def test_stopped_copy_leaves_no_mount(api, daemon, image):
    """A client that goes away mid-download of a stopped container: the filesystem is unmounted."""
    cid = create(api, image)
    try:
        with connect(daemon, f"/containers/{cid}/archive/get") as ws:
            ws.send(json.dumps({"path": "/"}))
            ws.recv(timeout=60)  # starting: the filesystem is mounted now
        r = api.post(f"/containers/{cid}/commit", json={})  # takes the lock: waits for the copy's end
        assert r.status_code == 201, r.text
        mounts = Path("/proc/self/mountinfo").read_text()
        assert f"/containers/{cid}/rootfs" not in mounts
        api.delete(f"/images/{r.json()['id']}")
    finally:
        remove(api, cid)


def test_a_daemon_killed_mid_copy_leaves_no_mount():
    """kill -9 while a stopped container's filesystem is mounted for a copy: the next start
    unmounts it, and the copy works again."""
    with tempfile.TemporaryDirectory(prefix="kleened-cpfault-") as tmp, running_daemon(Path(tmp)) as d:
        image = create_image(d, tag="cpfault")
        with d.client() as api:
            cid = create(api, image)
        d.stop()
        d.env["KLEENED_FAULT_POINT"] = "container.files.mounted"
        d.start()
        # the daemon dies mid-call: whatever error the stream ends with is the expected one
        with contextlib.suppress(Exception), connect(d, f"/containers/{cid}/archive/get") as ws:
            ws.send(json.dumps({"path": "/etc"}))
            ws.recv(timeout=60)
        d.wait_dead()
        assert "point=container.files.mounted" in d.log()
        assert f"/containers/{cid}/rootfs " in Path("/proc/self/mountinfo").read_text()  # left by the kill
        del d.env["KLEENED_FAULT_POINT"]
        d.start()
        assert f"/containers/{cid}/rootfs " not in Path("/proc/self/mountinfo").read_text()
        assert_clean(d)
        with d.client() as api:
            assert api.get(f"/containers/{cid}/archive/stat", params={"path": "/etc/passwd"}).status_code == 200
            remove(api, cid)


def test_cp_to_a_remote_daemon_over_mutual_tls(tmp_path):
    """The files travel in the stream: a daemon reached over TCP with client certificates, in both
    directions, with a tree that has a symlink and modes."""
    from tests.rootfs import file_url, session_tarball
    from tests.tls import running_tls_daemon

    with tempfile.TemporaryDirectory(prefix="kleened-cptls-") as tmp, running_tls_daemon(Path(tmp)) as tls:
        c = tls.certs
        flags = ["--tlsverify", "--tlscacert", str(c.ca), "--tlscert", str(c.client_cert), "--tlskey",
                 str(c.client_key)]

        def remote(*args: str):
            return run_klee(tls.mtls_host, *args, flags=flags)

        assert remote("image", "create", "-t", "cptls", "fetch", file_url(session_tarball(tls.daemon.workdir))
                      ).returncode == 0
        cid = remote("create", "--name", "cptls", "cptls", "/bin/true").lines[-1]
        tree = tmp_path / "t"
        (tree / "d").mkdir(parents=True)
        (tree / "d/f").write_bytes(os.urandom(3 * 1024 * 1024))
        os.chmod(tree / "d/f", 0o604)
        os.symlink("d/f", tree / "link")
        assert remote("cp", str(tree), "cptls:/var/www/t").returncode == 0
        back = tmp_path / "back"
        r = remote("cp", "cptls:/var/www/t", str(back))
        assert r.returncode == 0, r
        assert describe(back) == describe(tree)
        assert remote("rmc", cid).returncode == 0


def test_upload_limits():
    """`cp_max_bytes` and `cp_max_entries` stop an upload with the reason; what came before stays."""
    with tempfile.TemporaryDirectory(prefix="kleened-cplimit-") as tmp, \
            running_daemon(Path(tmp), extra={"cp_max_bytes": 1000, "cp_max_entries": 5}) as d:
        image = create_image(d, tag="cplimit")
        with d.client() as api:
            cid = create(api, image)
            code, reason = _put(d, cid, "/tmp", _tar({"small": b"s" * 600, "big": b"b" * 600}))
            assert code == 1011 and "larger than 1000 bytes" in reason["message"], reason
            assert api.get(f"/containers/{cid}/archive/stat", params={"path": "/tmp/small"}).status_code == 200
            code, reason = _put(d, cid, "/tmp", _tar({f"f{i}": b"" for i in range(6)}))
            assert code == 1011 and "more than 5 entries" in reason["message"], reason
            assert _put(d, cid, "/tmp", _tar({f"g{i}": b"x" for i in range(5)}))[0] == 1000
            remove(api, cid)
        assert_clean(d)


def test_paths_under_mounts_are_the_mounts(api, daemon, klee, image, tmp_path):
    """A volume and a host file mounted in the container: cp reads and writes their sources, running
    or stopped; a read-only mount refuses uploads."""
    volume = f"cpv{secrets.token_hex(3)}"
    host_file = tmp_path / "host.conf"
    host_file.write_text("from the host\n")
    mounts = [{"type": "volume", "source": volume, "destination": "/data"},
              {"type": "nullfs", "source": str(host_file), "destination": "/etc/app.conf", "read_only": True}]
    r = api.post("/containers/create", json={"image": image, "cmd": ["/bin/sleep", "300"], "mounts": mounts,
                                            "network_driver": "disabled"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    volume_dir = Path(api.get(f"/volumes/{volume}/inspect").json()["volume"]["mountpoint"])
    try:
        note = tmp_path / "note"
        note.write_text("in the volume\n")
        assert klee("cp", str(note), f"{cid}:/data/").returncode == 0  # stopped
        assert (volume_dir / "note").read_text() == "in the volume\n"
        assert klee("start", "-d", cid).returncode == 0
        assert klee("cp", str(note), f"{cid}:/data/running-note").returncode == 0  # running
        assert "in the volume" in klee("exec", cid, "/bin/cat", "/data/running-note").stdout
        out = tmp_path / "out"
        assert klee("cp", f"{cid}:/data", str(out)).returncode == 0
        assert sorted(p.name for p in out.iterdir()) == ["note", "running-note"]
        assert klee("cp", f"{cid}:/etc/app.conf", str(tmp_path / "conf")).returncode == 0
        assert (tmp_path / "conf").read_text() == "from the host\n"
        st = api.get(f"/containers/{cid}/archive/stat", params={"path": "/data"}).json()
        assert st["name"] == "data" and stat.S_ISDIR(st["mode"])
        code, reason = _put(daemon, cid, "/etc/app.conf", _tar({"x": b"x"}))
        assert code == 1002 and "read-only" in reason["message"], reason
        assert host_file.read_text() == "from the host\n"
    finally:
        remove(api, cid)
        assert api.delete(f"/volumes/{volume}").status_code == 200
