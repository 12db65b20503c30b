"""Round trip through Docker: an image built here is saved with `klee image save`, loaded by a
dockerd of the test's own (`tests/dockerd.py`: its own roots and socket, no bridge, no iptables),
which sees its config and runs it; `docker save` of it is loaded back with `klee image load` and
runs in a container here. The dockerd is stopped and everything it left removed afterwards, and
the host is checked for its processes, mounts, cgroups, /run directories and network changes."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import dockerd
from tests.builds import built, run
from tests.cli import run_klee
from tests.conftest import require
from tests.daemon import Daemon
from tests.wsapi import create_image

pytestmark = pytest.mark.integration

DOCKERFILE = """\
FROM {base}
ENV GREETING=hello-from-kleene
WORKDIR /srv/app
RUN echo "file says $GREETING" > greeting.txt
LABEL org.example.trip="round" org.example.by=kleene
EXPOSE 8080/tcp 53/udp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting.txt; echo \\"env says $GREETING in $(pwd)\\""]
"""
EXPECTED = "file says hello-from-kleene\nenv says hello-from-kleene in /srv/app\n"


@pytest.fixture(scope="module")
def docker() -> Iterator[dockerd.Dockerd]:
    require(dockerd.available(), "needs dockerd and docker (Debian package docker.io)")
    leftovers: list[dockerd.Leftovers] = []
    # A short directory: containerd's socket lives under it.
    with tempfile.TemporaryDirectory(prefix="kdk") as tmp, dockerd.own_dockerd(Path(tmp), leftovers) as daemon:
        yield daemon
    assert not leftovers[0], f"dockerd left this on the host: {leftovers[0]}"


def klee(daemon: Daemon, *args: str):
    result = run_klee(daemon.host, *args, timeout=300)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def test_round_trip_through_docker(oci_daemon, docker, tmp_path):
    base = create_image(oci_daemon, tag="dockertrip-base:1")
    image = built(oci_daemon, tmp_path / "ctx", DOCKERFILE.format(base=base), tag="dockertrip:1").image_id
    with oci_daemon.client() as api:
        assert run(api, oci_daemon, image) == EXPECTED  # as built here

    ours = tmp_path / "ours.tar"
    klee(oci_daemon, "image", "save", "-o", str(ours), "dockertrip:1")
    loaded = docker.docker("load", "-i", str(ours))
    assert "dockertrip:1" in loaded.stdout, loaded.stdout

    config = json.loads(docker.docker("image", "inspect", "dockertrip:1").stdout)[0]["Config"]
    assert "GREETING=hello-from-kleene" in config["Env"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Cmd"] == ['cat greeting.txt; echo "env says $GREETING in $(pwd)"']
    assert config["WorkingDir"] == "/srv/app"
    assert config["Labels"] == {"org.example.trip": "round", "org.example.by": "kleene"}
    assert set(config["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    ran = docker.docker("run", "--rm", "--network", "none", "dockertrip:1")
    assert ran.stdout == EXPECTED, (ran.stdout, ran.stderr)

    docker.docker("tag", "dockertrip:1", "dockertrip-back:2")
    theirs = tmp_path / "theirs.tar"
    docker.docker("save", "-o", str(theirs), "dockertrip-back:2")
    back = klee(oci_daemon, "image", "load", "-i", str(theirs))
    assert "Loaded image: dockertrip-back:2" in back.stdout, back.stdout

    with oci_daemon.client() as api:
        inspected = api.get("/images/dockertrip-back:2/inspect").json()
        assert inspected["id"] != image
        assert "GREETING=hello-from-kleene" in inspected["env"] and inspected["workdir"] == "/srv/app"
        assert inspected["entrypoint"] == ["/bin/sh", "-c"] and inspected["labels"]["org.example.trip"] == "round"
        assert sorted(inspected["exposed_ports"]) == ["53/udp", "8080/tcp"]
        assert run(api, oci_daemon, "dockertrip-back:2") == EXPECTED
        for name in ("dockertrip-back:2", "dockertrip:1", "dockertrip-base:1"):
            assert api.delete(f"/images/{name}").status_code == 200
