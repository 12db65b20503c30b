"""What `RuncRuntime` adds to a bundle for isolation: the seccomp profile and the idmapped
views of volumes that a container in a user namespace needs.

Seccomp settings (a container's `seccomp` field, or the `linux.seccomp` jail parameter):
"" takes the daemon's host-wide setting (`seccomp_profile` in the config: "" for the built-in
profile, "unconfined", or the path of a JSON profile read at start), "default" the built-in
profile, "unconfined" none, and a JSON text a custom profile (`seccomp.parse`).

Volume views: a volume (`BindMount.remap`) of a user-namespaced container is bound through an
idmapped mount attached at `<bundle>/idmap/<n>` for the time of `runc run`; runc copies it
into the container's mount namespace, after which the view is unmounted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kleened.platform.base import ContainerSpec, UserNamespace
from kleened.platform.linux import idmap, mountinfo, seccomp
from kleened.platform.posix import hostcmd

VIEWS_DIR = "idmap"
IDMAPPED_OVERLAY_KERNEL = (5, 19)  # overlayfs accepts idmapped layers from here on
_PROBE_RANGE = UserNamespace(uid_base=4_000_000_000, gid_base=4_000_000_000, size=65536)


class Security:
    def __init__(self, state_dir: Path, seccomp_profile: str = "") -> None:
        self._state_dir = state_dir
        self._machine = os.uname().machine
        self._kernel = seccomp.kernel_version(os.uname().release)
        self._default = self._host_default(seccomp_profile)
        self._userns_fds = idmap.UsernsFds()
        self._userns_error: str | None = None
        self._probed = False

    # --- seccomp -----------------------------------------------------------------------------

    def _host_default(self, setting: str) -> str:
        """The host-wide setting as a container setting; a profile file is read once, here."""
        if setting in ("", "default", "unconfined"):
            return setting or "default"
        try:
            text = Path(setting).read_text()
        except OSError as exc:
            raise ValueError(f"seccomp_profile: cannot read '{setting}': {exc.strerror}") from None
        try:
            seccomp.parse(text)
        except seccomp.ProfileError as exc:
            raise ValueError(f"seccomp_profile '{setting}': {exc}") from None
        return text

    def check_seccomp(self, value: str) -> str:
        if value in ("", "default", "unconfined"):
            return value
        if not value.lstrip().startswith("{"):
            raise ValueError("seccomp must be 'default', 'unconfined' or a JSON profile")
        seccomp.parse(value)  # ProfileError is a ValueError with a one-line message
        return value

    def render_seccomp(self, value: str, capabilities: list[str]) -> dict[str, Any] | None:
        """The OCI object for a checked setting; None for unconfined."""
        value = value or self._default
        if value == "unconfined":
            return None
        profile = seccomp.DEFAULT_PROFILE if value == "default" else seccomp.parse(value)
        return seccomp.render(profile, machine=self._machine, capabilities=capabilities, kernel=self._kernel)

    # --- user namespaces -----------------------------------------------------------------------

    def check_userns(self) -> None:
        """Refuse (ValueError) where idmapped overlay layers do not work; probed once."""
        if not self._probed:
            self._userns_error = self._probe()
            self._probed = True
        if self._userns_error is not None:
            raise ValueError(self._userns_error)

    def _probe(self) -> str | None:
        need = "user namespaces need idmapped mounts of overlayfs layers (Linux 5.19 or later)"
        if self._kernel < IDMAPPED_OVERLAY_KERNEL:
            return f"{need}; this kernel is {'.'.join(map(str, self._kernel))}"
        with tempfile.TemporaryDirectory(dir=self._state_dir, prefix=".probe-") as tmp:
            source, target = Path(tmp, "source"), Path(tmp, "target")
            source.mkdir()
            target.mkdir()
            try:
                fds = idmap.UsernsFds()
                try:
                    idmap.bind(source, target, fds.get(_PROBE_RANGE))
                finally:
                    fds.close()
            except OSError as exc:
                return f"{need}: {exc.strerror or exc}"
            hostcmd.run_sync(["umount", str(target)])
        return None

    def remap_mounts(self, spec: ContainerSpec, bundle_dir: Path) -> ContainerSpec:
        """`spec` with each `remap` bind (a volume) replaced by an idmapped view of it."""
        if spec.userns is None or not any(m.remap for m in spec.mounts):
            return spec
        views = bundle_dir / VIEWS_DIR
        views.mkdir(mode=0o700, exist_ok=True)
        fd = self._userns_fds.get(spec.userns)
        mounts = []
        for i, m in enumerate(spec.mounts):
            if m.remap:
                view = views / str(i)
                if m.source.is_dir():
                    view.mkdir()
                else:
                    view.touch()
                idmap.bind(m.source, view, fd)
                m = dataclasses.replace(m, source=view)
            mounts.append(m)
        return dataclasses.replace(spec, mounts=mounts)

    async def unmount_views(self, bundle_dir: Path) -> None:
        """Unmount and remove what `remap_mounts` attached (idempotent)."""
        views = bundle_dir / VIEWS_DIR
        if not views.exists():
            return
        for m in reversed(mountinfo.mounts_under(views)):
            await hostcmd.run(["umount", m.mountpoint])
        for entry in views.iterdir():
            if entry.is_dir():
                entry.rmdir()
            else:
                entry.unlink()
        views.rmdir()

    def uid_range(self, bundle_dir: Path) -> tuple[int, int]:
        """(host uid of the container's root, size) from its config; (0, 2**32) without userns."""
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, IndexError):
            mapping = json.loads((bundle_dir / "config.json").read_text())["linux"]["uidMappings"][0]
            return int(mapping["hostID"]), int(mapping["size"])
        return 0, 2**32
