"""kleene_protocol: lenient decoding, full encoding, close reasons, ids and references."""

import json

import msgspec
import pytest

from kleene_protocol import models
from kleene_protocol.codec import BodyError, decode, encode
from kleene_protocol.ids import is_id, new_id
from kleene_protocol.refs import InvalidReference, parse_image_ref, split_nametag, split_snapshot
from kleene_protocol.websocket import (
    MAX_CLOSE_REASON,
    WebSocketMessage,
    close_reason,
    decode_close_reason,
    starting,
)


def test_string_booleans_are_accepted_as_upstream_does():
    cfg = decode(b'{"exec_id": "abc", "attach": "true", "start_container": "false"}', models.ExecStartConfig)
    assert cfg.attach is True and cfg.start_container is False
    cfg = decode(b'{"exec_id": "abc", "attach": true, "start_container": "TRUE"}', models.ExecStartConfig)
    assert cfg.start_container is True


def test_non_boolean_strings_are_rejected_with_the_path():
    with pytest.raises(BodyError) as err:
        decode(b'{"exec_id": "a", "attach": "mustbeboolean", "start_container": true}', models.ExecStartConfig)
    assert "$.attach" in str(err.value) and not err.value.malformed


def test_missing_required_field_is_named():
    with pytest.raises(BodyError, match="attach"):
        decode(b'{"exec_id": "a", "start_container": true}', models.ExecStartConfig)


def test_malformed_json_is_told_apart():
    with pytest.raises(BodyError) as err:
        decode(b'{"name": ', models.VolumeConfig)
    assert err.value.malformed


def test_unknown_fields_are_ignored():
    # klee's `container update` sends an extra top-level "container" key.
    upd = decode(b'{"container": "abc", "name": "new", "mounts": [], "public_ports": []}', models.ContainerUpdate)
    assert upd.name == "new" and upd.env is None and upd.cmd is None


def test_missing_keys_take_upstream_defaults():
    cfg = decode(b'{"image": "base"}', models.ContainerConfig)
    assert cfg.cmd == [] and cfg.env == [] and cfg.user == "" and cfg.network_driver == "ipnet"
    assert cfg.restart_policy == "no" and cfg.persist is False and cfg.mounts == [] and cfg.name is None
    net = decode(b'{"name": "n", "type": "bridge"}', models.NetworkConfig)
    assert net.nat == "<host-gateway>" and net.icc is True and net.internal is False
    build = decode(b'{"context": "/c", "container_config": {}}', models.ImageBuildConfig)
    assert build.dockerfile == "Dockerfile" and build.cleanup is True and build.quiet is False


def test_enum_values_are_checked():
    with pytest.raises(BodyError, match="network_driver"):
        decode(b'{"network_driver": "lolnet"}', models.ContainerConfig)


def test_interface_name_is_limited_to_15_characters():
    with pytest.raises(BodyError, match="interface"):
        decode(b'{"name": "n", "type": "bridge", "interface": "abcdefghijklmnop"}', models.NetworkConfig)


def test_responses_encode_every_field_with_null_where_unset():
    c = models.Container(
        id="abc", name=None, image_id="img", cmd=None, user="root", env=[], jail_param=[], network_driver="host",
        public_ports=[], restart_policy="no", persist=False, created="2024-05-01T10:00:00.123456Z", dataset="d",
    )
    doc = json.loads(encode(c))
    assert doc["name"] is None and doc["cmd"] is None and doc["running"] is False
    assert set(doc) >= {"id", "name", "image_id", "cmd", "user", "env", "jail_param", "network_driver",
                        "public_ports", "restart_policy", "persist", "created", "dataset", "running"}
    port = json.loads(encode(models.PublishedPort(interfaces=[], host_port="80", container_port="80",
                                                  protocol="tcp")))
    assert set(port) == {"interfaces", "host_port", "container_port", "protocol", "ip_address", "ip_address6"}


def test_starting_message_is_upstreams_golden_bytes():
    assert json.loads(starting()) == {"msg_type": "starting", "message": "", "data": ""}


@pytest.mark.parametrize("message", ["x" * 500, "é" * 200, "日本語" * 80, "\"quoted\\\"" * 40, "ok"])
def test_close_reason_always_fits_and_stays_json(message):
    reason = close_reason("error", message, "@0123456789ab")
    assert len(reason.encode()) <= MAX_CLOSE_REASON
    decoded = decode_close_reason(reason)
    assert isinstance(decoded, WebSocketMessage)
    assert message.startswith(decoded.message)
    assert decoded.data == "@0123456789ab"


def test_close_reason_keeps_short_messages_whole():
    reason = close_reason("closing", "image created", "0123456789ab")
    assert json.loads(reason) == {"msg_type": "closing", "message": "image created", "data": "0123456789ab"}


def test_ids_are_12_hex_and_never_all_digits():
    for _ in range(2000):
        i = new_id()
        assert is_id(i) and len(i) == 12 and not i.isdigit()
    assert not is_id("123456789012") and not is_id("ABCDEF012345") and not is_id("abc")
    assert not is_id("abcdef012345\n") and not is_id("123456789012\n")


@pytest.mark.parametrize(
    ("text", "name", "tag", "snap"),
    [
        ("FreeBSD", "FreeBSD", "latest", ""),
        ("FreeBSD:13.2-STABLE", "FreeBSD", "13.2-STABLE", ""),
        ("FreeBSD:base@6b3c821605d4", "FreeBSD", "base", "@6b3c821605d4"),
        ("48fa55889b0f@2028818d6f06", "48fa55889b0f", "latest", "@2028818d6f06"),
        ("name:", "name", "", ""),
    ],
)
def test_image_references(text, name, tag, snap):
    ref = parse_image_ref(text)
    assert (ref.name, ref.tag, ref.snapshot) == (name, tag, snap)


@pytest.mark.parametrize("text", ["a:b:c", "a@b@c", "a@"])
def test_bad_references_are_errors_not_crashes(text):
    with pytest.raises(InvalidReference):
        parse_image_ref(text)


def test_nametag_and_snapshot_splitting_edge_cases():
    assert split_nametag("") == ("", "")
    assert split_snapshot("x") == ("x", "")
    assert split_snapshot("x@abc") == ("x", "@abc")


def test_openapi_document_covers_every_route_and_schema():
    from kleene_protocol.openapi import ROUTES, openapi_document

    doc = openapi_document()
    assert doc["openapi"].startswith("3.")
    assert sum(len(ops) for ops in doc["paths"].values()) == len(ROUTES)
    for name in ("ContainerConfig", "Image", "WebSocketMessage", "NetworkConfig", "VolumeInspect"):
        assert name in doc["components"]["schemas"]
    msgspec.json.encode(doc)  # serialisable
