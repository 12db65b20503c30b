"""The set of core services the API calls, wired together at start by `kleened.wiring`."""

from __future__ import annotations

from dataclasses import dataclass, field

from kleene_protocol.models import Version

from .store import Store
from .volumes import Volumes


@dataclass
class Services:
    store: Store
    volumes: Volumes
    version: Version
    extras: dict[str, object] = field(default_factory=dict)
