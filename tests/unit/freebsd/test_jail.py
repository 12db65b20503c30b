"""Jail command lines and jail parameters (platform/freebsd/jail.py, params.py), checked against
upstream's (freebsd-backend.md §1) with the upstream bugs each line avoids."""

from __future__ import annotations

import pytest

from kleened.platform.freebsd import jail, params
from kleened.platform.freebsd.params import ParamError, ProcessUser

CID = "a1b2c3d4e5f6"


def test_defaults_in_upstreams_order():
    assert params.with_defaults([], container_id=CID, user="root") == [
        "mount.devfs=true", "exec.stop=/bin/sh /etc/rc.shutdown", "exec.clean=true", "exec.jail_user=root",
        f"host.hostname={CID}"]


@pytest.mark.parametrize(("given", "suppressed"), [
    ("host.hostname=web", "host.hostname"),
    ("exec.jail_user=ntpd", "exec.jail_user"),
    ("exec.clean=false", "exec.clean"),
    ("exec.noclean", "exec.clean"),
    ("exec.stop=/bin/true", "exec.stop"),
    ("exec.nostop", "exec.stop"),
    ("mount.devfs=false", "mount.devfs"),
    ("mount.nodevfs", "mount.devfs"),
])
def test_a_user_param_suppresses_its_default(given, suppressed):
    """Upstream's prefix rule: a user param starting with one of the default's keys wins."""
    out = params.with_defaults([given], container_id=CID, user="root")
    assert out[-1] == given
    assert not any(p.startswith(suppressed) for p in out[:-1])


def test_exec_stop_is_never_on_the_jail_line():
    """B1: jail(8) forgets pseudo-params, so `jail -r` never ran it; kleened runs it itself."""
    line = params.jail_line(params.with_defaults(["exec.stop=/bin/true", "allow.raw_sockets"], container_id=CID,
                                                 user="root"))
    assert line == ["mount.devfs=true", "exec.clean=true", "exec.jail_user=root", f"host.hostname={CID}",
                    "allow.raw_sockets"]


@pytest.mark.parametrize(("given", "command"), [
    ([], ["/bin/sh", "/etc/rc.shutdown"]),  # the default, as an argv: no embedded quotes (B1)
    (["exec.stop=/usr/sbin/service nginx stop"], ["/usr/sbin/service", "nginx", "stop"]),
    (["exec.stop=pkill -f x; sleep 1"], ["/bin/sh", "-c", "pkill -f x; sleep 1"]),  # jail(8)'s metachar rule
    (["exec.nostop"], None),
    (["exec.stop="], None),
])
def test_stop_command(given, command):
    assert params.stop_command(given) == command


@pytest.mark.parametrize("bad", ["name=x", "path=/", "persist", "nopersist", "command=/bin/sh", "jid=3"])
def test_params_kleened_sets_are_refused(bad):
    with pytest.raises(ParamError, match="is set by kleened"):
        params.check([bad])


@pytest.mark.parametrize("bad", ["-x", "Allow.raw", "a b=c", "allow..x", ""])
def test_malformed_params_are_refused(bad):
    with pytest.raises(ParamError, match="invalid jail parameter"):
        params.check([bad])


def test_param_values_are_kept_verbatim():
    given = ["exec.prestart=echo $HOME; rm -rf /", "osrelease=13.2-RELEASE", "allow.sysvipc"]
    assert params.check(given) == given


def test_one_user_resolution_for_every_path():
    """B25: `-J exec.jail_user=` decided the user of `jail -c` only; here of every jexec too."""
    given = ["exec.jail_user=ntpd"]
    assert params.process_user(given, "root").name == "ntpd"
    assert params.process_user(given, "root", exec_user="www").name == "www"  # an exec's own user wins
    assert params.process_user([], "").name == "root"
    assert params.process_user(["exec.system_jail_user"], "root").from_host
    assert not params.process_user(["exec.noclean"], "root").clean
    assert not params.process_user(["exec.clean=false"], "root").clean
    assert params.process_user([], "root").clean


def test_create_line_is_persistent_and_has_no_command():
    """B2: no `command=` (jail(8) reports 0 or 1 for it): the jail persists, jexec runs processes."""
    argv = jail.create_argv(CID, "/zroot/kleene/container/" + CID, jail.network_params(jail.Network("vnet")),
                            ["mount.devfs=true", f"host.hostname={CID}"])
    assert argv == ["jail", "-c", f"path=/zroot/kleene/container/{CID}", f"name={CID}", "persist", "vnet",
                    "mount.devfs=true", f"host.hostname={CID}"]
    assert not any(a.startswith(("command=", "exec.prestart", "exec.start", "vnet.interface")) for a in argv)


@pytest.mark.parametrize(("network", "expected"), [
    (jail.Network("host"), ["ip4=inherit", "ip6=inherit"]),
    (jail.Network("disabled"), ["ip4=disable", "ip6=disable"]),
    (jail.Network("vnet"), ["vnet"]),
    (jail.Network("ipnet", ("10.13.37.2", "10.13.38.2")), ["ip4=new", "ip6=new", "ip4.addr=10.13.37.2,10.13.38.2"]),
    # B7: an IPv6 address goes to ip6.addr, never ip4.addr
    (jail.Network("ipnet", ("10.13.37.2",), ("fd00::2",)), ["ip4=new", "ip6=new", "ip4.addr=10.13.37.2",
                                                             "ip6.addr=fd00::2"]),
    (jail.Network("ipnet"), ["ip4=new", "ip6=new"]),
])
def test_network_params(network, expected):
    assert jail.network_params(network) == expected


def test_live_address_change_sets_both_families():
    assert jail.modify_argv(CID, jail.addresses_params(["10.0.0.2"], ["fd00::2"])) == [
        "jail", "-m", f"name={CID}", "ip4.addr=10.0.0.2", "ip6.addr=fd00::2"]


def test_exec_line():
    user = params.process_user(["exec.jail_user=www"], "root")
    command = jail.Command(args=["/bin/sh", "-c", "echo $A"], env=["A=1", "B=two words"])
    assert jail.exec_argv(CID, command, user) == [
        "jexec", "-l", "-U", "www", CID, "/usr/bin/env", "A=1", "B=two words", "/bin/sh", "-c", "echo $A"]


def test_exec_line_without_clean_env_and_with_a_host_user():
    user = ProcessUser(name="root", from_host=True, clean=False)
    assert jail.exec_argv(CID, jail.Command(args=["id"]), user) == ["jexec", "-u", "root", CID, "/usr/bin/env", "id"]


def test_working_directory_is_data_for_the_jails_own_shell():
    argv = jail.exec_argv(CID, jail.Command(args=["pwd"], cwd="/srv/my app;rm -rf /"),
                          params.process_user([], "root"))
    tail = argv[argv.index("/usr/bin/env") + 1:]
    assert tail == ["/bin/sh", "-c", jail.CHDIR_SCRIPT, "kleened-cwd", "/srv/my app;rm -rf /", "pwd"]


@pytest.mark.parametrize("command", [jail.Command(args=[]), jail.Command(args=["A=B", "x"]),
                                     jail.Command(args=["ls"], env=["noequals"]),
                                     jail.Command(args=["ls"], env=["-i=1"])])
def test_exec_refuses_what_env_would_misread(command):
    with pytest.raises(ValueError):
        jail.exec_argv(CID, command, params.process_user([], "root"))


def test_kleened_runs_its_own_commands_as_root_whatever_the_image_user():
    """B3: upstream configured vnet interfaces with exec.start, i.e. as the image's user."""
    assert jail.root_argv(CID, "/sbin/ifconfig", "lo0", "up") == ["jexec", "-u", "root", CID, "/sbin/ifconfig",
                                                                  "lo0", "up"]


@pytest.mark.parametrize("bad", ["123456", "a b", "../x", "x" * 65, "a.b"])
def test_jail_names_that_jls_would_misread_are_refused(bad):
    with pytest.raises(ValueError):
        jail.remove_argv(bad)


def test_stop_and_state_lines():
    assert jail.remove_argv(CID) == ["jail", "-r", CID]
    assert jail.exists_argv(CID) == ["jls", "-j", CID, "jid"]
    assert jail.processes_argv(CID) == ["ps", "-o", "pid=", "-J", CID]


def test_parse_jls():
    text = ('{"__version": "2", "jail-information": {"jail": [{"jid": 3, "hostname": "h", "path": "/zroot/c/x", '
            '"name": "a1b2c3d4e5f6", "state": "ACTIVE", "ipv4_addrs": ["10.0.0.2"], "ipv6_addrs": []}]}}')
    found = jail.parse_jls(text)
    assert found == {CID: jail.JailInfo(jid=3, name=CID, path="/zroot/c/x", ip4=("10.0.0.2",), ip6=())}
    assert jail.parse_jls("") == {}
