"""The set of core services the API calls, wired together at start by `kleened.wiring`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kleene_protocol.models import ExecConfig, Version

from .builder.build import Builder
from .commit import Commits
from .containers import Containers
from .copies import Copies
from .errors import KleeneError
from .events import Events
from .execs import Execs
from .images import Images
from .networks import Networks
from .oci.service import OciImages
from .stats import Stats
from .store import Store
from .supervisor import Supervisor
from .system import System
from .volumes import Volumes

log = logging.getLogger(__name__)


@dataclass
class Services:
    store: Store
    volumes: Volumes
    networks: Networks
    images: Images
    containers: Containers
    execs: Execs
    supervisor: Supervisor
    version: Version
    builds: Builder
    events: Events  # publish after a change commits; logs: `containers.logs`
    oci: OciImages  # pull, push, save, load (docs/images.md)
    stats: Stats
    copies: Copies  # cp (docs/operations.md)
    commits: Commits
    system: System  # system info, df, prune

    async def start_on_startup(self) -> None:
        """Start every container whose restart policy says so (`on-startup`, `always`, and
        `unless-stopped` unless a user stopped it), detached."""
        for record in self.containers.on_startup():
            if self.containers.is_running(record.id):
                continue
            try:
                instance = self.execs.create(ExecConfig(container_id=record.id))
                await self.execs.start(instance.id, attach=False, start_container=True)
                log.info("started on start-up", extra={"container": record.id})
            except KleeneError as exc:
                log.error("could not start container on start-up: %s", exc.message, extra={"container": record.id})
