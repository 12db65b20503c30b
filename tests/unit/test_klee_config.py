"""klee's settings: flags > environment > config file > defaults, and the config file search."""

from __future__ import annotations

import pytest

from klee import config
from klee.config import DEFAULT_HOST, resolve
from klee.errors import UsageError


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A cwd, a HOME and a system config path, all empty, under tmp_path."""
    cwd, home, system = tmp_path / "cwd", tmp_path / "home", tmp_path / "etc"
    for directory in (cwd, home, system, home / ".klee"):
        directory.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(system / "klee_config.yaml"))
    return {
        "cwd": cwd / "klee_config.yaml",
        "home": home / ".klee" / "klee_config.yaml",
        "system": system / "klee_config.yaml",
    }


def test_defaults_without_any_source(places):
    settings = resolve({}, environ={})
    assert settings == config.Settings()
    assert settings.host == DEFAULT_HOST == "http:///var/run/kleened.sock"
    assert settings.tlsverify is False and settings.theme == "fancy" and settings.config_path is None


def test_flags_beat_environment_beat_file(places):
    places["cwd"].write_text("host: http://10.0.0.1:1\ntheme: simple\ntlscacert: /file/ca.pem\n")
    environ = {"KLEE_HOST": "http://10.0.0.2:2", "KLEE_TLS_CACERT": "/env/ca.pem"}
    settings = resolve({"host": "http://10.0.0.3:3"}, environ=environ)
    assert settings.host == "http://10.0.0.3:3"  # flag
    assert settings.tlscacert == "/env/ca.pem"  # environment over file
    assert settings.theme == "simple"  # file over default
    assert settings.config_path == "klee_config.yaml"


def test_none_flags_do_not_hide_other_sources(places):
    settings = resolve({"host": None, "tlsverify": None}, environ={"KLEE_HOST": "http://10.0.0.2:2"})
    assert settings.host == "http://10.0.0.2:2"


@pytest.mark.parametrize("order", [("cwd", "home", "system"), ("home", "system"), ("system",)])
def test_first_existing_location_wins(places, order):
    for rank, place in enumerate(order):
        places[place].write_text(f"host: http://10.0.0.{rank}:80\n")
    settings = resolve({}, environ={})
    assert settings.host == "http://10.0.0.0:80"
    assert settings.config_path.endswith("klee_config.yaml")


def test_explicit_config_flag_and_environment(places, tmp_path):
    flag_file, env_file = tmp_path / "flag.yaml", tmp_path / "env.yaml"
    flag_file.write_text("host: http://10.0.0.1:1\n")
    env_file.write_text("host: http://10.0.0.2:2\n")
    places["cwd"].write_text("host: http://10.0.0.3:3\n")
    assert resolve({"config": str(flag_file)}, environ={"KLEE_CONFIG": str(env_file)}).host == "http://10.0.0.1:1"
    assert resolve({}, environ={"KLEE_CONFIG": str(env_file)}).host == "http://10.0.0.2:2"


def test_explicit_config_must_exist(places, tmp_path):
    with pytest.raises(UsageError, match="not found"):
        resolve({"config": str(tmp_path / "missing.yaml")}, environ={})


def test_unknown_key_is_an_error(places):
    places["home"].write_text("host: http://10.0.0.1:1\nhots: typo\n")
    with pytest.raises(UsageError) as error:
        resolve({}, environ={})
    assert error.value.message == (f"Error! Config file {places['home']} is not valid: parameter name 'hots' unknown")


def test_unparseable_file_is_skipped_with_a_message(places):
    places["cwd"].write_text("host: [unclosed\n")
    places["home"].write_text("host: http://10.0.0.9:9\n")
    warnings: list[str] = []
    settings = resolve({}, environ={}, warn=warnings.append)
    assert warnings == ["Error! Could not parse config at klee_config.yaml"]
    assert settings.host == "http://10.0.0.9:9"


def test_empty_file_counts_as_found(places):
    places["cwd"].write_text("")
    places["home"].write_text("host: http://10.0.0.9:9\n")
    assert resolve({}, environ={}).host == DEFAULT_HOST


@pytest.mark.parametrize("text", ["- a list\n", "tlsverify: maybe\n", "host: 12\n"])
def test_invalid_values_in_file(places, text):
    places["cwd"].write_text(text)
    with pytest.raises(UsageError, match="is not valid"):
        resolve({}, environ={})


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("TRUE", True), ("True", True), ("1", False), ("no", False)]
)
def test_tls_verify_environment(places, value, expected):
    assert resolve({}, environ={"KLEE_TLS_VERIFY": value}).tlsverify is expected


def test_tls_cert_environment_is_the_client_certificate(places):
    settings = resolve({}, environ={"KLEE_TLS_CERT": "/c.pem", "KLEE_TLS_KEY": "/k.pem", "KLEE_TLS_CACERT": "/ca.pem"})
    assert (settings.tlscert, settings.tlskey, settings.tlscacert) == ("/c.pem", "/k.pem", "/ca.pem")


def test_tlscert_needs_tlskey(places):
    with pytest.raises(UsageError) as error:
        resolve({"tlscert": "/c.pem"}, environ={})
    assert error.value.message == "When '--tlscert' is set you must also provide the '--tlskey'"


def test_theme_is_checked(places):
    assert resolve({}, environ={"KLEE_THEME": "simple"}).theme == "simple"
    with pytest.raises(UsageError, match="Unknown theme"):
        resolve({}, environ={"KLEE_THEME": "neon"})
