"""Backend selection (wiring.select_backend): the OS and the `backend` config key, in one place."""

from __future__ import annotations

import pytest

from kleened.config import Config
from kleened.wiring import UNTRIED, check_untried, select_backend


@pytest.mark.parametrize(("sys_platform", "backend"), [("linux", "linux"), ("freebsd14", "freebsd"),
                                                        ("freebsd13", "freebsd")])
def test_auto_follows_the_os(sys_platform: str, backend: str):
    assert select_backend(sys_platform, "auto") == backend
    assert select_backend(sys_platform, backend) == backend


def test_the_simulated_freebsd_host_is_chosen_by_name_only():
    """tests/freebsd_sim's rig: never picked by "auto"."""
    assert select_backend("linux", "freebsd-simulated") == "freebsd-simulated"
    assert select_backend("linux", "auto") == "linux"


def test_the_default_is_auto():
    assert Config().backend == "auto"


@pytest.mark.parametrize(("sys_platform", "configured", "message"), [
    ("darwin", "auto", "kleened has drivers for Linux and FreeBSD, not for 'darwin'"),
    ("linux", "freebsd", "the freebsd backend cannot run on 'linux'"),
    ("freebsd14", "linux", "the linux backend cannot run on 'freebsd14'"),
    ("linux", "solaris", "unknown backend 'solaris': use auto, linux or freebsd"),
    ("freebsd14", "freebsd-simulated", "the freebsd-simulated backend is a test rig for Linux hosts, not for "
                                       "'freebsd14'"),
])
def test_refusals_are_one_line(sys_platform: str, configured: str, message: str):
    with pytest.raises(ValueError) as caught:
        select_backend(sys_platform, configured)
    assert str(caught.value) == message


def test_untried_drivers_on_a_real_freebsd_host_need_their_name(caplog):
    with pytest.raises(ValueError) as caught:
        check_untried("freebsd", "auto")
    assert str(caught.value) == UNTRIED
    check_untried("freebsd", "freebsd")  # asked for by name: starts, with a warning
    assert "have not run on a real FreeBSD host" in caplog.text
    check_untried("linux", "auto")
    check_untried("freebsd-simulated", "freebsd-simulated")
