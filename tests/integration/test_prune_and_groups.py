"""Two upstream behaviours: prune answers in creation order (images: newest first, children before
their parents, as upstream's suite asserts), and a process's groups are what `initgroups` gives
the user from the image's /etc/group, for the main process, an exec and `--user`."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest

from tests.builds import built
from tests.conftest import require_root_runtime
from tests.daemon import running_daemon
from tests.integration.test_containers import create, exec_create, start_detached
from tests.wsapi import create_image, exec_stream


@pytest.fixture
def fresh():
    """A daemon of its own: prune takes every unused object, so nothing else may be there."""
    require_root_runtime()
    with tempfile.TemporaryDirectory(prefix="kleened-prune-") as tmp, running_daemon(Path(tmp)) as d:
        yield d


def test_prune_lists_containers_volumes_and_networks_oldest_first(fresh):
    image = create_image(fresh)
    with fresh.client() as api:
        containers = [create(api, image, ["/bin/true"]) for _ in range(4)]
        volumes = [f"pv{n}{secrets.token_hex(3)}" for n in range(4)]
        for name in sorted(volumes, reverse=True):  # names in the reverse order: the answer follows creation
            assert api.post("/volumes/create", json={"name": name}).status_code == 201
        networks = []
        for n in range(4):
            r = api.post("/networks/create", json={"name": f"pn{n}{secrets.token_hex(2)}", "type": "bridge",
                                                   "subnet": f"10.97.{n}.0/24"})
            assert r.status_code == 201, r.text
            networks.append(r.json()["id"])
        assert api.post("/containers/prune").json() == containers
        assert api.post("/volumes/prune").json() == sorted(volumes, reverse=True)
        assert api.post("/networks/prune").json() == networks


def test_image_prune_lists_children_before_parents(fresh, tmp_path):
    base = create_image(fresh)
    parent = built(fresh, tmp_path / "p", f"FROM {base}\nRUN echo p > /p\n").image_id
    child = built(fresh, tmp_path / "c", f"FROM {parent}\nRUN echo c > /c\n").image_id
    with fresh.client() as api:
        assert api.post("/images/prune", params={"all": "true"}).json() == [child, parent, base]


@pytest.fixture(scope="module")
def grouped(daemon, tmp_path_factory) -> str:
    """An image whose /etc/group lists user1 in two more groups (and root in one)."""
    base = create_image(daemon, tag=f"gbox:{secrets.token_hex(3)}")
    dockerfile = (f"FROM {base}\nRUN echo 'wheel:x:10:root,user1' >> /etc/group && "
                  "echo 'staff:x:50:user1' >> /etc/group\n")
    return built(daemon, tmp_path_factory.mktemp("groups"), dockerfile).image_id


ID = ["/bin/sh", "-c", "id"]
# The kernel keeps a process's groups sorted (setgroups(2)), so `id` lists them by number.
USER1 = "uid=1000(user1) gid=1000(user1) groups=10(wheel),50(staff),1000(user1)\n"


def test_groups_of_the_main_process_follow_initgroups(api, daemon, grouped):
    cid = create(api, grouped, ID, user="user1")
    assert exec_stream(daemon, exec_create(api, cid)).text == USER1
    root = create(api, grouped, ID)
    assert exec_stream(daemon, exec_create(api, root)).text == "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"
    for c in (cid, root):
        assert api.delete(f"/containers/{c}").status_code == 200


def test_groups_of_an_exec_and_its_user_follow_initgroups(api, daemon, grouped):
    cid = create(api, grouped, ["/bin/sleep", "1000"])
    start_detached(api, daemon, cid)
    assert exec_stream(daemon, exec_create(api, cid, ID, user="user1")).text == USER1
    with_group = exec_stream(daemon, exec_create(api, cid, ID, user="user1:staff")).text
    assert with_group == "uid=1000(user1) gid=50(staff) groups=10(wheel),50(staff)\n"
    assert api.post(f"/containers/{cid}/stop").status_code == 200
    assert api.delete(f"/containers/{cid}").status_code == 200
