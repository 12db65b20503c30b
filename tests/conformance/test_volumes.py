"""Volume storage conformance: create (idempotent, contents kept), populate, list, remove. Runs
against every backend of conftest.py (ZFS datasets on a SIMULATED host in CI)."""

from __future__ import annotations

from pathlib import Path

from tests.conformance.conftest import Backend
from tests.freebsd_sim.conftest import run


def test_volume_lifecycle(backend: Backend, tmp_path: Path):
    storage = backend.storage
    name = f"conf-{backend.subnet_octet}"
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "file").write_text("from the image\n")
    (source / ".hidden").write_text("dot\n")
    (source / "link").symlink_to("sub/file")

    async def body() -> tuple[Path, list[str], list[str]]:
        path = await storage.create_volume(name)  # type: ignore[attr-defined]
        assert path.is_dir() and name in storage.dataset(name)  # type: ignore[attr-defined]
        await storage.populate_volume(name, source)  # type: ignore[attr-defined]
        (path / "kept").write_text("mine\n")
        assert await storage.create_volume(name) == path  # type: ignore[attr-defined]
        listed = await storage.list_volumes()  # type: ignore[attr-defined]
        assert (path / "sub" / "file").read_text() == "from the image\n"
        assert (path / ".hidden").read_text() == "dot\n" and (path / "link").readlink() == Path("sub/file")
        assert (path / "kept").read_text() == "mine\n"
        await storage.remove_volume(name)  # type: ignore[attr-defined]
        await storage.remove_volume(name)  # type: ignore[attr-defined]
        return path, listed, await storage.list_volumes()  # type: ignore[attr-defined]

    path, listed, after = run(body)
    assert name in listed and name not in after and not path.exists()
