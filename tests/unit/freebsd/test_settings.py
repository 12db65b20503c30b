"""FreeBSD defaults for every config key (platform/freebsd/settings.py)."""

from __future__ import annotations

import pytest

from kleened.config import Config
from kleened.platform.freebsd import settings


def test_every_config_key_has_a_freebsd_default():
    assert set(settings.FREEBSD_DEFAULTS) == set(Config.__struct_fields__)


def test_upstreams_values():
    d = settings.FREEBSD_DEFAULTS
    assert d["kleene_root"] == "zroot/kleene"
    assert d["pf_config_template_path"] == "/usr/local/etc/kleened/pf.conf.kleene"
    assert d["pf_config_path"] == "/etc/pf.conf"
    assert d["api_listening_sockets"] == [{"address": "http:///var/run/kleened.sock"}]


def test_missing_upstream_keys_take_the_defaults():
    chosen = settings.from_config(Config())
    assert (chosen.kleene_root, chosen.pf_config_path, chosen.pf_mode) == ("zroot/kleene", "/etc/pf.conf", "file")
    given = settings.from_config(Config(kleene_root="tank/k", pf_config_path="/etc/pf.kleene.conf", pf_mode="anchor"))
    assert (given.kleene_root, given.pf_config_path, given.pf_mode) == ("tank/k", "/etc/pf.kleene.conf", "anchor")
    with pytest.raises(ValueError):
        settings.FreeBSDSettings(kleene_root="z/k", pf_config_template_path="", pf_config_path="", host_prefix="k",
                                 stop_timeout=1.0, pf_mode="nft")


def test_a_config_that_selects_the_freebsd_drivers_gets_their_defaults(tmp_path):
    """Keys the file leaves out take FreeBSD's defaults (no pids limit: rctl needs racct); those it
    sets win. A config for the Linux drivers keeps the Linux defaults."""
    from kleened.config import load

    path = tmp_path / "config.yaml"
    path.write_text("backend: freebsd-simulated\nstate_root: /tmp/k\n")
    chosen = load(str(path))
    assert (chosen.default_pids_limit, chosen.seccomp_profile, chosen.state_root) == (0, "unconfined", "/tmp/k")
    path.write_text("backend: linux\n")
    assert (load(str(path)).default_pids_limit, load(str(path)).seccomp_profile) == (2048, "")
