"""klee's connection layer: host parsing, path quoting, error mapping (no daemon: httpx.MockTransport)."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest

from klee.config import Settings
from klee.connection import Client, Host, api_error, api_path, parse_host, quote_ident, ssl_context
from klee.errors import ApiError, ConnectionFailed, KleeError, UsageError


@pytest.mark.parametrize(
    ("text", "base_url", "ws_uri", "unix_path"),
    [
        ("http:///var/run/kleened.sock", "http://localhost", "ws://localhost/exec/start", "/var/run/kleened.sock"),
        (
            "https:///var/run/kleened.tlssock",
            "https://localhost",
            "wss://localhost/exec/start",
            "/var/run/kleened.tlssock",
        ),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "ws://127.0.0.1:8080/exec/start", None),
        ("https://[::1]:8085", "https://[::1]:8085", "wss://[::1]:8085/exec/start", None),
        ("http://[::1]:8080/", "http://[::1]:8080", "ws://[::1]:8080/exec/start", None),
        ("http://10.0.0.1", "http://10.0.0.1", "ws://10.0.0.1/exec/start", None),
    ],
)
def test_parse_host(text, base_url, ws_uri, unix_path):
    host = parse_host(text)
    assert host.base_url == base_url
    assert host.ws_uri("/exec/start") == ws_uri
    assert host.is_unix == (unix_path is not None)
    if unix_path:
        assert host.path == unix_path
    assert host.tls == text.startswith("https")


@pytest.mark.parametrize(
    "text",
    ["http:///sock?x=1", "http:///sock#frag", "http:///sock;params", "http://1.2.3.4:80/?a", "https://[::1]:1#f"],
)
def test_query_params_fragment_rejected_with_upstream_message(text):
    with pytest.raises(UsageError) as error:
        parse_host(text)
    assert error.value.message == "Could not parse the '--host' parameter"


@pytest.mark.parametrize(
    "text",
    [
        "unix:///var/run/kleened.sock",
        "tcp://1.2.3.4:1",
        "http://",
        "http:///",
        "http://[::1",
        "http://h:99999",
        "http://u:p@1.2.3.4:1",
        "/var/run/kleened.sock",
    ],
)
def test_unusable_hosts_rejected(text):
    with pytest.raises(UsageError, match=r"^Could not parse the '--host' parameter"):
        parse_host(text)


def test_host_path_prefix_is_kept_for_rest_and_streams():
    host = parse_host("http://10.0.0.1:80/kleene/")
    assert host == Host("http", "10.0.0.1:80", "/kleene")
    assert host.ws_uri("/images/create") == "ws://10.0.0.1:80/kleene/images/create"


@pytest.mark.parametrize(
    ("ident", "quoted"),
    [
        ("abc123", "abc123"),
        ("FreeBSD:13.2-RELEASE@6b3c821605d4", "FreeBSD:13.2-RELEASE@6b3c821605d4"),
        ("a/b", "a%2Fb"),
        ("../../containers/x", "..%2F..%2Fcontainers%2Fx"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("a?b#c%d", "a%3Fb%23c%25d"),
        ("with space", "with%20space"),
    ],
)
def test_quote_ident(ident, quoted):
    assert quote_ident(ident) == quoted
    assert "/" not in quote_ident(ident)


def test_empty_ident_refused():
    with pytest.raises(UsageError):
        quote_ident("")


def test_api_path():
    assert api_path("/images/{}/tag", "x/y") == "/images/x%2Fy/tag"
    assert api_path("/networks/{}/disconnect/{}", "n", "..") == "/networks/n/disconnect/%2E%2E"


def _client(handler) -> Client:
    return Client(Settings(host="http:///nonexistent.sock"), transport=httpx.MockTransport(handler))


def test_request_sends_json_and_decodes_reply():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["body"] = json.loads(request.content)
        seen["type"] = request.headers["content-type"]
        return httpx.Response(201, json={"id": "abc"})

    reply = _client(handler).post("/volumes/create", body={"name": "v"}, ok=(201,))
    assert reply == {"id": "abc"}
    assert seen == {"url": "http://localhost/volumes/create", "body": {"name": "v"}, "type": "application/json"}


def test_quoted_path_reaches_the_wire_unchanged():
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    client = _client(handler)
    client.get(api_path("/volumes/{}/inspect", ".."))
    client.get(api_path("/images/{}/tag", "a/b"), params={"nametag": "new:tag"})
    assert paths == ["/volumes/%2E%2E/inspect", "/images/a%2Fb/tag?nametag=new%3Atag"]


def test_empty_reply_is_none():
    assert _client(lambda request: httpx.Response(204)).post("/networks/connect", body={}, ok=(204,)) is None


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"message": "no such container"}, "no such container"),
        (404, {"message": "Error: No such image: x\n"}, "Error: No such image: x"),
        (409, {"message": "you cannot remove a running container"}, "you cannot remove a running container"),
        (500, None, "unknown backend error"),
        (404, None, "unrecognized status-code received from kleened: 404"),
        (
            422,
            {"errors": [{"title": "Invalid value", "source": {"pointer": "/name"}, "detail": "null"}]},
            "invalid request: /name: null",
        ),
        (418, {"other": 1}, "unrecognized status-code received from kleened: 418"),
    ],
)
def test_error_statuses(status, body, message):
    content = b"not found" if body is None else json.dumps(body).encode()
    with pytest.raises(ApiError) as error:
        _client(lambda request: httpx.Response(status, content=content)).get("/containers/x/inspect")
    assert error.value.status == status
    assert error.value.message == message
    assert api_error(status, content).message == message


def test_non_json_success_is_reported():
    with pytest.raises(KleeError, match="Unexpected response"):
        _client(lambda request: httpx.Response(200, content=b"<html>")).get("/volumes/list")


def test_connection_failure_message():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 2] No such file or directory")

    with pytest.raises(ConnectionFailed) as error:
        _client(handler).get("/volumes/list")
    assert error.value.message == "unable to connect to kleened: [Errno 2] No such file or directory"
    assert error.value.exit_code == 125


def test_real_missing_socket_is_a_connection_failure(tmp_path):
    client = Client(Settings(host=f"http://{tmp_path}/none.sock"))
    with pytest.raises(ConnectionFailed, match=r"^unable to connect to kleened: "):
        client.get("/volumes/list")


def test_timeout_message():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(KleeError) as error:
        _client(handler).get("/volumes/list")
    assert error.value.message == "Error! Timed out while waiting for Kleene to respond."


def test_ssl_context_modes(tmp_path):
    unverified = ssl_context(Settings(host="https://1.2.3.4:1"))
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname
    verified = ssl_context(Settings(host="https://1.2.3.4:1", tlsverify=True))
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    with pytest.raises(UsageError, match="TLS certificates"):
        ssl_context(Settings(host="https://1.2.3.4:1", tlscacert=str(tmp_path / "missing-ca.pem")))
    with pytest.raises(UsageError, match="TLS certificates"):
        ssl_context(Settings(host="https://1.2.3.4:1", tlscert=str(tmp_path / "c.pem"), tlskey=str(tmp_path / "k.pem")))
