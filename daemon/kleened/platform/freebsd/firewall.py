"""`PfFirewall`: the `Firewall` on FreeBSD; loads the rules pf.py renders, one load at a time.

Two modes (settings `pf_mode`):
- `file` (upstream's): the template at `pf_config_template_path` (upstream's format; pf.py's
  `DEFAULT_TEMPLATE` when the file is missing) is filled and written to `pf_config_path`
  (default /etc/pf.conf), then loaded with `pfctl -f`. Unlike upstream, the new text is checked
  first (`pfctl -n -f` on a temporary file next to it) and only then renamed into place, so a
  ruleset pf would refuse never replaces a working /etc/pf.conf, and the old rules stay loaded.
- `anchor`: the rules alone are loaded into the anchor `pf_anchor` (`pfctl -a kleened -f -`);
  /etc/pf.conf is never written. The host's pf.conf must hook the anchor in (`pf.anchor_hooks`);
  `hooks_present` says whether it does.

Every load goes through one lock, so two changes never interleave their writes (B15).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from kleene_protocol.models import Network, PublishedPort
from kleened.platform.base import HostCommandError

from . import pf
from .command import Commands

log = logging.getLogger(__name__)


class PfFirewall:
    def __init__(self, commands: Commands, *, mode: str = "file", template_path: str = "", config_path: str = "",
                 anchor: str = "kleened") -> None:
        if mode not in ("file", "anchor"):
            raise ValueError(f"unknown pf mode '{mode}'")
        self.commands = commands
        self.mode = mode
        self.template_path = Path(template_path) if template_path else None
        self.config_path = Path(config_path) if config_path else None
        self.anchor = anchor
        self._lock = trio.Lock()

    def template(self) -> str:
        if self.template_path is not None and self.template_path.is_file():
            return self.template_path.read_text()
        return pf.DEFAULT_TEMPLATE

    async def apply(self, networks: Sequence[Network], ports: Sequence[PublishedPort], *, host_gateway: str,
                    plugs: Mapping[str, Sequence[str]]) -> None:
        """Render and load the rules of `networks` and `ports`; `plugs` are the epairs' host ends
        per network id (the `kleenet_<id>_all_interfaces` macros)."""
        await self.load(pf.render(networks, ports, host_gateway=host_gateway, epairs=plugs))

    async def load(self, ruleset: pf.Ruleset) -> None:
        """Load `ruleset`; raises `HostCommandError` (pf's own message) or `TemplateError`,
        leaving the rules that were loaded before."""
        async with self._lock:
            if self.mode == "anchor":
                text = ruleset.text().encode()
                await self.commands.run(pf.load_anchor_argv(self.anchor), input=text)
                return
            await self._apply_file(pf.render_template(self.template(), ruleset))

    async def _apply_file(self, text: str) -> None:
        assert self.config_path is not None, "file mode needs pf_config_path"
        directory = self.config_path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.config_path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chmod(tmp, 0o600)
            await self.commands.run(pf.check_file_argv(tmp))
            os.replace(tmp, self.config_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        await self.commands.run(pf.load_file_argv(str(self.config_path)))

    async def remove(self) -> None:
        """Take kleened's rules out: flush the anchor, or load the template with empty sections."""
        if self.mode == "anchor":
            async with self._lock:
                await self.commands.run(pf.flush_anchor_argv(self.anchor))
            return
        await self.load(pf.Ruleset(macros=[], translation=[], filtering=[]))

    async def enable(self) -> None:
        """`pfctl -e`; "already enabled" (exit 1) is fine."""
        try:
            await self.commands.run(pf.ENABLE_ARGV)
        except HostCommandError as exc:
            if "already enabled" not in exc.stderr:
                raise

    async def hooks_present(self) -> bool:
        """Anchor mode: whether the host's loaded pf.conf evaluates our anchor."""
        rules = await self.commands.run(pf.show_argv("rules"))
        nat = await self.commands.run(pf.show_argv("nat"))
        return pf.has_hooks(rules, nat, self.anchor)
