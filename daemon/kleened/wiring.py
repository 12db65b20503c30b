"""Build the daemon's services for this host: pick the platform drivers and connect them.

This is the only module that names concrete drivers; core receives them as interfaces.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from kleene_protocol import API_VERSION
from kleene_protocol.models import RuntimeVersion, Version

from . import __version__
from .config import Config
from .core.services import Services
from .core.store import Store
from .core.volumes import Volumes


def _version(runtimes: list[RuntimeVersion]) -> Version:
    return Version(
        version=__version__,
        api_version=API_VERSION,
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=sys.version.split()[0],
        runtimes=runtimes,
    )


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[Services]:
    if not sys.platform.startswith("linux"):
        raise SystemExit("kleened: this build has drivers for Linux only (FreeBSD drivers are planned)")
    from .platform.linux.overlay import OverlayStorage

    root = Path(config.state_root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    store = Store(root / "metadata.sqlite")
    storage = OverlayStorage(root)
    try:
        volumes = Volumes(store, storage, is_running=lambda _cid: False)
        yield Services(store=store, volumes=volumes, version=_version([]))
    finally:
        store.close()
