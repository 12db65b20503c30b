"""contrib/: the example config loads and documents every key; the systemd unit verifies; the
rc.d script parses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kleened.config import Config, load, parse_listener

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"


def test_example_config_loads_with_every_listener_kind(tmp_path):
    """Loaded as kleened loads it, with the certificate paths pointed at dummy files."""
    text = (CONTRIB / "kleened.yaml").read_text()
    for name in ("server-cert.pem", "server-key.pem", "ca.pem"):
        (tmp_path / name).write_text("dummy\n")
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("/etc/kleened/certs/", f"{tmp_path}/"))
    config = load(str(path))
    listeners = [parse_listener(entry) for entry in config.api_listening_sockets]
    kinds = [(listener.unix_path is not None, listener.tls, listener.verify) for listener in listeners]
    assert kinds == [(True, False, False), (False, False, False), (True, True, False), (False, True, True)]
    assert listeners[1].host == "::1" and listeners[3].cafile == f"{tmp_path}/ca.pem"


def test_example_config_names_every_key_with_its_default():
    text = (CONTRIB / "kleened.yaml").read_text()
    documented = set(re.findall(r"^#? ?([a-z_]+):", text, flags=re.MULTILINE))
    missing = set(Config.__struct_fields__) - documented
    assert not missing, f"document these kleened config keys in contrib/kleened.yaml: {sorted(missing)}"
    defaults = Config()
    for key in ("log_level", "state_root", "host_prefix", "max_request_body", "max_ws_message", "stop_timeout"):
        value = re.search(rf"^{key}: (.+)$", text, flags=re.MULTILINE)
        assert value is not None and value.group(1) == str(getattr(defaults, key)), key


def test_systemd_unit_has_the_expected_settings():
    unit = (CONTRIB / "systemd" / "kleened.service").read_text()
    for line in ("Type=exec", "KillSignal=SIGTERM", "ExecReload=/bin/kill -HUP $MAINPID", "TimeoutStopSec=60"):
        assert line in unit.splitlines(), line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    """`systemd-analyze verify` works without systemd as PID 1. ExecStart must exist: point it at ours."""
    kleened = Path(sys.executable).parent / "kleened"
    if not kleened.exists():
        pytest.skip("kleened is not installed next to this interpreter")
    unit = (CONTRIB / "systemd" / "kleened.service").read_text().replace("/usr/local/bin/kleened", str(kleened))
    (tmp_path / "kleened.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "kleened.service")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "kleened.service" not in result.stderr, result.stderr  # no warning about our unit


def test_freebsd_rc_script_parses_as_sh():
    script = CONTRIB / "freebsd" / "kleened"
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert 'extra_commands="reload"' in text and 'sig_reload="HUP"' in text and "KEYWORD: shutdown" in text
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
