"""kleened itself with the FreeBSD drivers (`backend: freebsd-simulated`) on the SIMULATED FreeBSD
host, driven through its real API with the Linux integration tests' client helpers.

A simulation, not FreeBSD (tests/freebsd_sim/__init__.py): what passes here is that core drives
the jail, ZFS, network and pf drivers in the right order and that processes, output, exit codes
and ptys flow end to end; it says nothing of how FreeBSD itself behaves.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builds import build, builders, built
from tests.builds import run as run_built
from tests.daemon import Daemon, running_daemon
from tests.freebsd_sim.conftest import ROOT_DATASET, simulated_host
from tests.freebsd_sim.host import SimHost
from tests.integration.test_containers import create, exec_create, start_detached
from tests.wsapi import create_image, exec_stream, run_stream

DEADLINE = 30.0  # seconds a polled condition may take


@pytest.fixture(scope="module")
def host(busybox_tree: Path) -> Iterator[SimHost]:
    """One simulated host for the module's daemons (starting one takes seconds here)."""
    with simulated_host(busybox_tree, "fbsim-daemon-") as sim:
        yield sim


def start_daemon(host: SimHost, workdir: Path, root: str = ROOT_DATASET, anchor: str = "kleened"):
    """kleened on the simulated host: the stand-ins first on PATH, pf in anchor mode. Each
    daemon needs a `kleene_root` and an anchor of its own (a start removes the datasets its
    store does not know, a stop empties its anchor)."""
    return running_daemon(workdir, extra={"backend": "freebsd-simulated", "kleene_root": root,
                                          "pf_mode": "anchor", "pf_anchor": anchor, "stop_timeout": 2},
                          env={"PATH": f"{host.bin}:{os.environ.get('PATH', '')}"})


@pytest.fixture(scope="module")
def daemon(host: SimHost) -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="kleened-fbsim-") as tmp, start_daemon(host, Path(tmp)) as d:
        yield d


@pytest.fixture
def api(daemon: Daemon):
    with daemon.client() as client:
        yield client


@pytest.fixture(scope="module")
def image(daemon: Daemon) -> str:
    return create_image(daemon, tag=f"base:{secrets.token_hex(3)}")


def inspect(api, cid: str) -> dict:
    r = api.get(f"/containers/{cid}/inspect")
    assert r.status_code == 200, r.text
    return r.json()["container"]


def wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} within {DEADLINE} s")


def remove(api, cid: str) -> None:
    r = api.delete(f"/containers/{cid}")
    assert r.status_code == 200, r.text


def test_a_base_image_is_a_sealed_dataset(api, host: SimHost, image: str):
    images = [d for d in host.datasets() if d.startswith(f"{ROOT_DATASET}/image/")]
    assert len(images) == 1
    assert f"{images[0]}@image" in host.snapshots()
    assert (host.mountpoint(images[0]) / "bin" / "busybox").exists()
    info = api.get("/system/info").json()
    assert (info["backend"], info["storage_driver"], info["os"]) == ("jail", "zfs", "FreeBSD (simulated)")
    assert api.get("/system/df").json()["layers_size"] > 0  # the dataset's files


def test_run_is_a_jail_on_a_clone_with_real_output_and_exit_code(api, daemon, host: SimHost, image: str):
    cid = create(api, image, ["/bin/sh", "-c", "echo hello from $(pwd); echo oops >&2; exit 3"])
    dataset = f"{ROOT_DATASET}/container/{cid}"
    assert dataset in host.datasets()  # cloned at create, before anything runs
    origin = host.ok("zfs", "list", "-H", "-o", "origin", dataset).strip()
    assert origin.startswith(f"{ROOT_DATASET}/image/") and origin.endswith("@image")
    stream = exec_stream(daemon, exec_create(api, cid))
    assert b"hello from /" in stream.output and b"oops" in stream.output
    assert stream.close_reason["message"].endswith("exited with exit-code 3"), stream
    container = wait_for(lambda: (c := inspect(api, cid)) and not c["running"] and c, "the container stops")
    assert container["exit_code"] == 3
    assert cid not in host.jails()  # the jail went with its main process
    r = api.post(f"/containers/{cid}/commit", json={"tag": "no:1", "changes": []})
    assert (r.status_code, r.json()["message"]) == (501, "commit is not available with the zfs storage driver: "
                                                         "the snapshot would stay part of the container's filesystem "
                                                         "(docs/freebsd.md)")
    remove(api, cid)
    assert dataset not in host.datasets()


def test_exec_with_a_tty_in_a_running_jail(api, daemon, host: SimHost, image: str):
    cid = create(api, image, ["/bin/sleep", "1000"])
    started = exec_stream(daemon, exec_create(api, cid), attach=False, start_container="true")
    assert started.close_code == 1001, started
    wait_for(lambda: cid in host.jails() and host.processes().get(cid), "the main process runs in the jail")
    resize = json.dumps({"type": "resize", "rows": 33, "cols": 101})
    keys = [resize, *[bytes([b]) for b in b"tty; stty size; exit 4\r"]]
    stream = exec_stream(daemon, exec_create(api, cid, ["/bin/sh"], tty=True), send=keys, start_container="false")
    assert "/dev/pts/" in stream.text and "33 101" in stream.text, stream
    assert stream.close_reason["message"].endswith("exited with exit-code 4"), stream
    plain = exec_stream(daemon, exec_create(api, cid, ["/usr/bin/tty"]), start_container="false")
    assert plain.text.startswith("not a tty"), plain
    r = api.post(f"/containers/{cid}/stop")
    assert r.status_code == 200, r.text
    assert not inspect(api, cid)["running"]
    assert cid not in host.jails()
    remove(api, cid)


def test_volumes_are_datasets_mounted_into_the_jail(api, daemon, host: SimHost, image: str):
    name = f"v{secrets.token_hex(3)}"
    writer = create(api, image, ["/bin/sh", "-c", "echo kept > /data/note; ls /data"],
                    mounts=[{"type": "volume", "source": name, "destination": "/data"}])
    dataset = f"{ROOT_DATASET}/volumes/{name}"
    assert dataset in host.datasets()
    stream = exec_stream(daemon, exec_create(api, writer))
    assert stream.text == "note\n", stream
    assert (host.mountpoint(dataset) / "note").read_text() == "kept\n"
    reader = create(api, image, ["/bin/cat", "/data/note"],
                    mounts=[{"type": "volume", "source": name, "destination": "/data", "read_only": True}])
    assert exec_stream(daemon, exec_create(api, reader)).text == "kept\n"
    for cid in (writer, reader):
        remove(api, cid)
    assert not [m for m in host.mounts() if "/container/" in m]  # nullfs and devfs undone
    r = api.delete(f"/volumes/{name}")
    assert r.status_code == 200, r.text
    assert dataset not in host.datasets()


def klee_network(name: str, **fields) -> dict:
    return {"name": name, "type": "loopback", "gateway": "", "gateway6": "", "icc": True, "interface": "",
            "internal": False, "nat": "", "subnet": "", "subnet6": "", **fields}


def connect(api, network: str, cid: str, ip: str = "") -> None:
    r = api.post("/networks/connect", json={"container": cid, "network": network, "ip_address": ip,
                                            "ip_address6": ""})
    assert r.status_code == 204, r.text


def rules(host: SimHost) -> list[str]:
    return [r["text"] for r in host.pf()["anchors"].get("kleened", [])]


def test_a_bridge_with_vnet_and_ipnet_jails_and_a_published_port(api, daemon, host: SimHost, image: str):
    r = api.post("/networks/create", json=klee_network("web", type="bridge", subnet="10.13.37.0/24",
                                                       gateway="<auto>"))
    assert r.status_code == 201, r.text
    bridge = api.get("/networks/web/inspect").json()["network"]["interface"]
    assert host.interfaces()[bridge]["cidrs"] == ["10.13.37.1/24"]
    vnet = create(api, image, ["/bin/sleep", "1000"], network_driver="vnet", public_ports=[
        {"interfaces": [], "host_port": "8080", "container_port": "80", "protocol": "tcp"}])
    ipnet = create(api, image, ["/bin/sleep", "1000"], network_driver="ipnet")
    connect(api, "web", vnet, "10.13.37.10")
    connect(api, "web", ipnet, "10.13.37.20")
    for cid in (vnet, ipnet):
        started = exec_stream(daemon, exec_create(api, cid), attach=False, start_container="true")
        assert started.close_code == 1001, started

    jails = host.jails()
    assert jails[vnet]["vnet"] and not jails[ipnet]["vnet"]
    inside = host.interfaces(vnet)  # the vnet jail's own stack: lo0 and its epair's end
    epair_b = next(name for name in inside if name.startswith("epair"))
    assert inside[epair_b]["cidrs"] == ["10.13.37.10/24"] and inside["lo0"]["up"]
    assert host.routes(vnet) == {"inet": "10.13.37.1"}
    epair_a = epair_b[:-1] + "a"
    assert epair_a in host.interfaces()[bridge]["members"]
    endpoint = api.get(f"/containers/{vnet}/inspect").json()["container_endpoints"][0]
    assert endpoint["epair"] == epair_a
    # ipnet: an alias on the bridge and the jail's own address list
    assert "10.13.37.20/32" in host.interfaces()[bridge]["cidrs"] and jails[ipnet]["ip4"] == ["10.13.37.20"]
    assert any("rdr" in rule and "8080" in rule and "10.13.37.10" in rule for rule in rules(host)), rules(host)
    assert any(epair_a in rule for rule in rules(host)), rules(host)  # the network's _all_interfaces macro
    # the ipnet jail runs processes like any other
    shown = exec_stream(daemon, exec_create(api, ipnet, ["/bin/echo", "ipnet runs"]), start_container="false")
    assert shown.text == "ipnet runs\n"

    for cid in (vnet, ipnet):
        assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert not [n for n in host.interfaces() if n.startswith("epair")]  # the epair went with the jail
    assert host.interfaces()[bridge]["cidrs"] == ["10.13.37.1/24"]  # the alias too
    assert not any("8080" in rule for rule in rules(host))  # a port's rules live while its container runs
    for cid in (vnet, ipnet):
        remove(api, cid)
    assert api.delete("/networks/web").status_code == 200
    assert bridge not in host.interfaces()


def test_a_restart_after_a_crash_reconciles_the_host(host: SimHost, tmp_path: Path):
    """kleened is killed while a vnet and an ipnet jail run: the next start removes the jails
    (processes, mounts, epairs, aliases), keeps the bridge, and the containers start again."""
    root = "zroot/restart"
    with start_daemon(host, tmp_path / "daemon", root, "restart") as daemon, daemon.client() as api:
        image = create_image(daemon, tag="base:restart")
        r = api.post("/networks/create", json=klee_network("back", type="bridge", subnet="10.13.38.0/24",
                                                           gateway="<auto>"))
        assert r.status_code == 201, r.text
        bridge = api.get("/networks/back/inspect").json()["network"]["interface"]
        vnet = create(api, image, ["/bin/sleep", "1000"], network_driver="vnet", mounts=[
            {"type": "volume", "source": "kept", "destination": "/data"}])
        ipnet = create(api, image, ["/bin/sleep", "1000"], network_driver="ipnet")
        connect(api, "back", vnet, "10.13.38.10")
        connect(api, "back", ipnet, "10.13.38.20")
        for cid in (vnet, ipnet):
            exec_stream(daemon, exec_create(api, cid), attach=False, start_container="true")
        wait_for(lambda: {vnet, ipnet} <= set(host.processes()), "both jails run their main process")
        daemon.kill()
        assert {vnet, ipnet} <= set(host.jails())  # the jails outlive a killed kleened
        unsealed = f"{root}/image/{secrets.token_hex(6)}"  # an image creation the kill cut short
        host.ok("zfs", "create", unsealed)
        assert [n for n in host.interfaces() if n.startswith("epair")]

        daemon.start()
        assert not host.jails() and not host.processes()
        assert not [n for n in host.interfaces() if n.startswith("epair")]
        assert host.interfaces()[bridge]["cidrs"] == ["10.13.38.1/24"]  # kept, the ipnet alias gone
        assert not [m for m in host.mounts() if "/container/" in m]
        assert not any(c["running"] for c in (inspect(api, vnet), inspect(api, ipnet)))
        assert {f"{root}/container/{vnet}", f"{root}/volumes/kept"} <= set(host.datasets())
        assert unsealed not in host.datasets()

        again = exec_stream(daemon, exec_create(api, vnet, ["/bin/sh", "-c", "ls /data; exit 6"]))
        assert again.close_reason["message"].endswith("exited with exit-code 6"), again
        for cid in (vnet, ipnet):
            remove(api, cid)
        assert api.delete("/volumes/kept").status_code == 200
        assert api.delete("/networks/back").status_code == 200
        assert api.delete(f"/images/{image}").status_code == 200


def test_a_build_makes_a_snapshot_per_step_and_a_failed_build_is_kept(api, daemon, host: SimHost, image: str,
                                                                        tmp_path: Path):
    """Upstream's ZFS build: steps are snapshots of the build container, which becomes the image's
    dataset; `FROM image@snapshot` clones a step; a failed build without cleanup is `<name>:failed`."""
    dockerfile = (f"FROM {image}\nRUN echo one > /one\nCOPY note /note\nWORKDIR /srv\n"
                  "RUN echo two > /two\nCMD [\"/bin/cat\", \"/one\", \"/two\", \"/note\"]\n")
    done = built(daemon, tmp_path / "ok", dockerfile, files={"note": "from the context\n"}, tag="app:1")
    first, second = done.snapshots[0].removeprefix("@"), done.snapshots[-1].removeprefix("@")
    assert len(done.snapshots) == 3  # RUN, COPY, RUN
    dataset = f"{ROOT_DATASET}/image/{done.image_id}"
    assert {f"{dataset}@{first}", f"{dataset}@{second}"} <= set(host.snapshots())
    assert f"{ROOT_DATASET}/container/{done.build_id}" not in host.datasets()  # renamed, not copied
    assert run_built(api, daemon, "app:1") == "one\ntwo\nfrom the context\n"
    # a container from the first step's snapshot has /one and nothing after it
    assert run_built(api, daemon, f"app:1@{first}", ["/bin/ls", "/"]).split().count("one") == 1
    assert "two" not in run_built(api, daemon, f"app:1@{first}", ["/bin/ls", "/"]).split()

    failed = build(daemon, tmp_path / "bad", f"FROM {image}\nRUN echo kept > /kept\nRUN exit 9\n", tag="bad:1",
                   cleanup=False)
    assert not failed.ok and "returned a non-zero code: 9" in "".join(failed.log)
    assert failed.close[2] == failed.snapshots[0]  # the last snapshot, as upstream
    assert run_built(api, daemon, "bad:failed", ["/bin/cat", "/kept"]) == "kept\n"
    assert not builders(api)
    for ref in ("bad:failed", "app:1"):
        r = api.delete(f"/images/{ref}")
        assert r.status_code == 200, r.text
    assert not [d for d in host.datasets() if d.startswith((f"{ROOT_DATASET}/container/", dataset))]
    assert [s for s in host.snapshots() if s.startswith(f"{ROOT_DATASET}/image/")] == [
        s for s in host.snapshots() if s.endswith("@image")]  # only the base image's is left


RACE_ROUNDS = int(os.environ.get("KLEENE_RACE_ROUNDS", "2"))  # every simulated command starts a Python
RACE_SEED = int(os.environ.get("KLEENE_RACE_SEED", str(secrets.randbits(32))))


def at_once(calls: list) -> list:
    """Run `calls` in threads released together, each after a random jitter; their results in order."""
    rng = random.Random(RACE_SEED)
    delays = [rng.random() * 0.05 for _ in calls]
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(i: int) -> None:
        barrier.wait()
        time.sleep(delays[i])
        results[i] = calls[i]()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_jails_started_and_stopped_at_once_share_a_bridge(api, daemon, host: SimHost, image: str):
    """Concurrent starts plug epairs and aliases into one bridge and reload pf; concurrent stops
    take them back: every round ends with the bridge as it began (seed in the messages)."""
    r = api.post("/networks/create", json=klee_network("race", type="bridge", subnet="10.13.39.0/24",
                                                       gateway="<auto>"))
    assert r.status_code == 201, r.text
    bridge = api.get("/networks/race/inspect").json()["network"]["interface"]
    cids = [create(api, image, ["/bin/sleep", "1000"], network_driver=driver) for driver in ("vnet", "vnet", "ipnet")]
    for cid in cids:
        connect(api, "race", cid, "<auto>")
    for n in range(RACE_ROUNDS):
        def start(cid: str):
            return exec_stream(daemon, exec_create(api, cid), attach=False, start_container="true").close_code

        assert at_once([lambda c=c: start(c) for c in cids]) == [1001] * 3, f"seed {RACE_SEED} round {n}"
        shown = host.interfaces()[bridge]
        assert len(shown["members"]) == 2 and len(shown["cidrs"]) == 2, f"seed {RACE_SEED} round {n}: {shown}"
        with daemon.client() as other:
            stopped = at_once([lambda c=c: other.post(f"/containers/{c}/stop").status_code for c in cids])
        assert stopped == [200] * 3, f"seed {RACE_SEED} round {n}"
        assert host.interfaces()[bridge] | {"members": [], "cidrs": ["10.13.39.1/24"]} == host.interfaces()[bridge], \
            f"seed {RACE_SEED} round {n}: {host.interfaces()[bridge]}"
        assert not host.jails() and not [i for i in host.interfaces() if i.startswith("epair")]
    for cid in cids:
        remove(api, cid)
    assert api.delete("/networks/race").status_code == 200


@pytest.mark.parametrize(("setting", "message"), [
    ({"live_restore": True}, "live_restore is not available with the FreeBSD drivers"),
    ({"seccomp_profile": "default"}, "seccomp profiles are Linux's; a jail is confined by its parameters"),
])
def test_what_the_freebsd_drivers_cannot_do_stops_kleened_with_one_line(host: SimHost, tmp_path: Path,
                                                                        setting: dict, message: str):
    daemon = Daemon(workdir=tmp_path, prefix="ktx", env={"PATH": f"{host.bin}:{os.environ.get('PATH', '')}"},
                    extra={"backend": "freebsd-simulated", "kleene_root": "zroot/refused", **setting})
    with pytest.raises(RuntimeError, match="kleened exited with 1") as caught:
        daemon.start()
    assert f"kleened: {message}" in str(caught.value)



def own_datasets(host: SimHost, image_id: str) -> list[str]:
    """The image's dataset and its snapshots, and every container dataset (build containers included)."""
    dataset = f"{ROOT_DATASET}/image/{image_id}"
    return [d for d in [*host.datasets(), *host.snapshots()]
            if d.startswith((f"{ROOT_DATASET}/container/", dataset + "@")) or d == dataset]


def test_a_multi_stage_build_hands_its_stages_over_to_the_image(api, daemon, host: SimHost, image: str,
                                                                 tmp_path: Path):
    """A stage FROM an earlier stage is a clone of that stage's last snapshot; at the end each
    earlier build container is promoted away (`zfs promote` of its clone), so none is left, and
    the image's dataset holds every layer it stacks, until the image goes."""
    dockerfile = (f"FROM {image} AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\n"
                  "FROM two\nCMD [\"/bin/cat\", \"/one\", \"/two\"]\n")
    done = built(daemon, tmp_path / "ok", dockerfile, tag="multi:1")
    dataset = f"{ROOT_DATASET}/image/{done.image_id}"
    steps = [s.removeprefix("@") for s in done.snapshots]
    assert len(steps) == 2 and not builders(api)
    assert own_datasets(host, done.image_id) == [dataset, *(f"{dataset}@{s}" for s in steps)]
    assert run_built(api, daemon, "multi:1") == "one\ntwo\n"

    child = built(daemon, tmp_path / "child", "FROM multi:1\nRUN echo three > /three\n", tag="child:1")
    r = api.delete("/images/multi:1")  # another image's dataset is a clone of it
    assert (r.status_code, r.json()["message"]) == (
        404, f"could not remove image {done.image_id} since it is used for images:\n{child.image_id}"), r.text
    for ref in ("child:1", "multi:1"):
        r = api.delete(f"/images/{ref}")
        assert r.status_code == 200, r.text
    assert own_datasets(host, done.image_id) == own_datasets(host, child.image_id) == []


def test_a_failed_multi_stage_build_keeps_only_its_failed_image(api, daemon, host: SimHost, image: str,
                                                                 tmp_path: Path):
    dockerfile = f"FROM {image} AS one\nRUN echo one > /one\nFROM one\nRUN echo two > /two\nRUN exit 7\n"
    failed = build(daemon, tmp_path / "kept", dockerfile, tag="mbad:1", cleanup=False)
    assert not failed.ok and "returned a non-zero code: 7" in "".join(failed.log)
    assert not builders(api)
    dataset = f"{ROOT_DATASET}/image/{failed.build_id}"
    assert [d for d in own_datasets(host, failed.build_id) if "@" not in d] == [dataset]
    assert run_built(api, daemon, "mbad:failed", ["/bin/cat", "/one", "/two"]) == "one\ntwo\n"
    r = api.delete("/images/mbad:failed")
    assert r.status_code == 200, r.text
    assert own_datasets(host, failed.build_id) == []

    gone = build(daemon, tmp_path / "gone", dockerfile, tag="mbad:2", cleanup=True)
    assert not gone.ok and not builders(api)
    assert own_datasets(host, gone.build_id) == []


def test_multi_stage_builds_and_an_image_removal_at_once(api, daemon, host: SimHost, image: str, tmp_path: Path):
    """Two multi-stage builds (each promoting its stages away) and the removal of the previous
    round's image, at once: both images are right, and no build container or removed image's
    dataset is left (seed in the messages)."""
    dockerfile = f"FROM {image} AS one\nRUN echo one > /one\nFROM one\nRUN echo two > /two\n"
    previous = built(daemon, tmp_path / "first", dockerfile, tag="race:first").image_id
    for n in range(RACE_ROUNDS):
        where = f"seed {RACE_SEED} round {n}"
        with daemon.client() as other:
            results = at_once([lambda k=k, n=n: built(daemon, tmp_path / f"r{n}-{k}", dockerfile, tag=f"race:{n}-{k}")
                               for k in range(2)] + [lambda old=previous: other.delete(f"/images/{old}").status_code])
        assert results[2] == 200, where
        assert [run_built(api, daemon, f"race:{n}-{k}", ["/bin/cat", "/one", "/two"]) for k in range(2)] == [
            "one\ntwo\n"] * 2, where
        assert not builders(api) and own_datasets(host, previous) == [], where
        api.delete(f"/images/race:{n}-1")
        previous = results[0].image_id
    assert api.delete(f"/images/{previous}").status_code == 200
    assert not [d for d in host.datasets() if d.startswith(f"{ROOT_DATASET}/container/")]


def test_stats_and_top_of_a_jail(api, daemon, host: SimHost, image: str):
    """`stats --no-stream` from `rctl -u jail:<id>`, `top` from `ps -J <id>`."""
    cid = create(api, image, ["/bin/sleep", "1000"], resources={"memory": 64 << 20})
    start_detached(api, daemon, cid)
    wait_for(lambda: cid in host.processes(), "the jail's process runs")
    stream = run_stream(daemon, "/containers/stats", {"containers": [cid], "interval": 0.2, "stream": False})
    assert stream.close_code == 1000 and stream.close_reason["message"] == "end of stats"
    (sample,) = [json.loads(f)["containers"] for f in stream.frames[1:]]
    assert [(c["id"], c["pids"], c["memory_limit"], c["net_rx"]) for c in sample] == [(cid, 1, 64 << 20, None)]
    assert sample[0]["memory"] > 0 and sample[0]["cpu_percent"] >= 0
    top = wait_for(lambda: (t := api.get(f"/containers/{cid}/top").json())["processes"]
                   and t["processes"][0]["command"] == "/bin/sleep 1000" and t, "top lists the sleep")
    (process,) = top["processes"]
    assert (process["pid"], process["user"], process["uid"]) == (host.processes()[cid][0], "root", 0)
    assert process["rss"] > 0 and process["started"].endswith("Z")
    r = api.post(f"/containers/{cid}/stop")
    assert r.status_code == 200, r.text
    assert api.get(f"/containers/{cid}/top").status_code == 409
    remove(api, cid)
