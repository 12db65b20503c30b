"""Core's `Volumes` service on the ZFS storage driver over the SIMULATED host: volumes are
datasets under `<kleene_root>/volumes`, shown with their dataset name and ZFS's mountpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleened.core.errors import NotFound
from kleened.core.store import Store
from kleened.core.volumes import Volumes
from tests.freebsd_sim.conftest import ROOT_DATASET, Drivers, run
from tests.freebsd_sim.host import SimHost


def test_volume_create_list_prune(sim: SimHost, drivers: Drivers, tmp_path: Path):
    volumes = Volumes(Store(tmp_path / "metadata.sqlite"), drivers.storage)

    async def body() -> tuple[str, str, list[str]]:
        made = await volumes.create("data")
        await volumes.create("cache")
        (Path(made.mountpoint) / "kept").write_text("x")
        listed = sorted(v.name for v in volumes.list())
        await volumes.remove("data")
        with pytest.raises(NotFound):
            await volumes.remove("data")
        assert await volumes.prune() == ["cache"]
        return made.dataset, made.mountpoint, listed

    dataset, mountpoint, listed = run(body)
    assert dataset == f"{ROOT_DATASET}/volumes/data" and listed == ["cache", "data"]
    assert not Path(mountpoint).exists()
    assert [d for d in sim.datasets() if "/volumes/" in d] == []
