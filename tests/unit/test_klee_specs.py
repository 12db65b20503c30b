"""klee's flag parsers (-m, -p, choices) and the exit code in exec closing messages."""

from __future__ import annotations

import pytest

from klee.errors import UsageError
from klee.specs import (
    NETWORK_DRIVERS,
    check_choice,
    exit_code_from_message,
    parse_mount,
    parse_publish,
    shell_exit_status,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "todo-db:/etc/todos",
            {"type": "volume", "source": "todo-db", "destination": "/etc/todos", "read_only": False},
        ),
        ("myvol:/mnt:rw", {"type": "volume", "source": "myvol", "destination": "/mnt", "read_only": False}),
        ("/tmp:/hosttmp:ro", {"type": "nullfs", "source": "/tmp", "destination": "/hosttmp", "read_only": True}),
    ],
)
def test_parse_mount(spec, expected):
    assert parse_mount(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a:b:ro:x", "invalid mount format 'a:b:ro:x'. Max 3 elements seperated by ':'."),
        ("justone", "invalid mount format 'justone'. Must have at least 2 elements seperated by ':'."),
        ("a:/b:rx", "invalid mount format 'a:/b:rx'. Last element should be either 'ro' or 'rw'."),
        (":/b", "invalid mount format ':/b'. SOURCE and DESTINATION cannot be empty."),
    ],
)
def test_parse_mount_errors(spec, message):
    with pytest.raises(UsageError) as error:
        parse_mount(spec)
    assert error.value.message == message
    assert error.value.exit_code == 125


@pytest.mark.parametrize(
    ("spec", "interfaces", "host_port", "container_port", "protocol"),
    [
        ("8080", [], "8080", "8080", "tcp"),
        ("8080:80", [], "8080", "80", "tcp"),
        ("8080:80/udp", [], "8080", "80", "udp"),
        ("8080/tcp", [], "8080", "8080", "tcp"),
        ("em1:8080:80", ["em1"], "8080", "80", "tcp"),
        ("em0:9000:9000/udp", ["em0"], "9000", "9000", "udp"),
        ("0:65535", [], "0", "65535", "tcp"),
    ],
)
def test_parse_publish(spec, interfaces, host_port, container_port, protocol):
    assert parse_publish(spec) == {
        "interfaces": interfaces,
        "host_port": host_port,
        "container_port": container_port,
        "protocol": protocol,
    }


@pytest.mark.parametrize(
    "spec", ["8080/sctp", "a:b:c:d", "http", "8080:", ":80", "65536", "80/tcp/udp", "-1", ":8080:80", "8080:80:x"]
)
def test_parse_publish_errors(spec):
    with pytest.raises(UsageError, match="could not decode port to publish"):
        parse_publish(spec)


def test_check_choice():
    assert check_choice("vnet", NETWORK_DRIVERS, "network driver") == "vnet"
    with pytest.raises(UsageError, match="'lolnet' is not a valid network driver"):
        check_choice("lolnet", NETWORK_DRIVERS, "network driver")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("executable 1a2b3c4d5e6f and its container exited with exit-code 0", 0),
        ("executable 1a2b3c4d5e6f and its container exited with exit-code 127", 127),
        ("1a2b3c4d5e6f has exited with exit-code 3", 3),
        ("1a2b3c4d5e6f has exited with exit-code -9", -9),
        ("succesfully started execution instance in detached mode", None),
        ("error starting exec instance", None),
        ("", None),
    ],
)
def test_exit_code_from_message(message, code):
    assert exit_code_from_message(message) == code


@pytest.mark.parametrize(("code", "status"), [(0, 0), (1, 1), (255, 255), (256, 0), (258, 2), (-9, 137), (-15, 143)])
def test_shell_exit_status(code, status):
    assert shell_exit_status(code) == status


def test_restart_policies():
    from klee.specs import check_restart_policy

    for ok in ("no", "on-startup", "always", "unless-stopped", "on-failure", "on-failure:3"):
        assert check_restart_policy(ok) == ok
    for bad, why in (("sometimes", "is not a valid restart policy"), ("always:3", "only 'on-failure' takes"),
                     ("on-failure:x", "must be a number"), ("on-failure:-1", "must be a number")):
        with pytest.raises(UsageError) as info:
            check_restart_policy(bad)
        assert why in str(info.value)
