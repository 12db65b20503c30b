"""Volumes over REST against a real kleened: upstream's routes, statuses and messages."""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def test_volume_lifecycle(api, daemon):
    name = unique("vol")
    r = api.post("/volumes/create", json={"name": name})
    assert r.status_code == 201 and r.json() == {"id": name}
    assert r.headers["content-type"] == "application/json"

    inspect = api.get(f"/volumes/{name}/inspect").json()
    volume = inspect["volume"]
    assert volume["name"] == name and inspect["mountpoints"] == []
    assert Path(volume["mountpoint"]).is_dir()
    assert Path(volume["mountpoint"]).is_relative_to(daemon.state_root)
    datetime.fromisoformat(volume["created"].replace("Z", "+00:00"))
    assert set(volume) == {"name", "dataset", "mountpoint", "created"}

    # create is idempotent: the existing volume comes back unchanged
    again = api.post("/volumes/create", json={"name": name})
    assert again.status_code == 201 and again.json() == {"id": name}
    assert api.get(f"/volumes/{name}/inspect").json()["volume"] == volume

    r = api.delete(f"/volumes/{name}")
    assert r.status_code == 200 and r.json() == {"id": name}
    assert not Path(volume["mountpoint"]).exists()
    r = api.delete(f"/volumes/{name}")
    assert r.status_code == 404 and r.json() == {"message": "No such volume"}
    r = api.get(f"/volumes/{name}/inspect")
    assert r.status_code == 404 and r.json() == {"message": "No such volume"}


def test_list_is_newest_first(api):
    names = [unique("order") for _ in range(3)]
    for n in names:
        assert api.post("/volumes/create", json={"name": n}).status_code == 201
    listed = [v["name"] for v in api.get("/volumes/list").json()]
    assert [n for n in listed if n in names] == list(reversed(names))
    for n in names:
        api.delete(f"/volumes/{n}")


def test_prune_removes_unused_volumes(api):
    names = [unique("prune") for _ in range(2)]
    for n in names:
        api.post("/volumes/create", json={"name": n})
    pruned = api.post("/volumes/prune").json()
    assert set(names) <= set(pruned)
    assert not {v["name"] for v in api.get("/volumes/list").json()} & set(names)


def test_bad_names_are_refused_with_a_message(api, daemon):
    for bad in ["../escape", "a/b", ".hidden", ""]:
        r = api.post("/volumes/create", json={"name": bad})
        assert r.status_code == 400, bad
        assert "invalid volume name" in r.json()["message"]
    assert not (daemon.state_root.parent / "escape").exists()


def test_bad_bodies_are_422_with_a_readable_message(api):
    r = api.post("/volumes/create", content=b'{"name": 5}')
    assert r.status_code == 422 and "Expected `str`" in r.json()["message"]
    r = api.post("/volumes/create", content=b"{not json")
    assert r.status_code == 422 and r.json()["message"].startswith("invalid json")
    r = api.post("/volumes/create", json={})
    assert r.status_code == 422 and "name" in r.json()["message"]


def test_unknown_route_is_plain_not_found(api):
    for method, path in [("GET", "/nope"), ("GET", "/volumes")]:
        r = api.request(method, path)
        assert r.status_code == 404 and r.text == "not found", (method, path)
    r = api.post("/volumes/list")  # a known route, the wrong method
    assert r.status_code == 405 and r.json() == {"message": "method not allowed"}


def test_request_bodies_are_size_limited(api):
    r = api.post("/volumes/create", content=b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}')
    assert r.status_code == 413 and "request body larger" in r.json()["message"]


def test_version_and_openapi(api):
    v = api.get("/version").json()
    assert v["api_version"] == "0.1.1" and v["version"] and "Linux" in v["platform"]
    doc = api.get("/openapi.json").json()
    assert "/volumes/create" in doc["paths"] and "VolumeConfig" in doc["components"]["schemas"]


def test_socket_mode_is_0660(daemon):
    assert daemon.socket.stat().st_mode & 0o777 == 0o660
