"""The API against its own OpenAPI document, with generated requests (schemathesis).

Every REST operation gets bounded examples of valid and invalid requests; every answer must be
below 500, have a status the document lists for the operation, and match its response schema.
WebSocket routes are left out (they are GETs only in the document), and so are registry logins
(they would reach generated registry hosts) and the routes that change host networking (network
create, remove, prune, connect, disconnect, and system prune, which prunes networks), which are
covered by the network and system tests with chosen values.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from kleene_protocol.openapi import openapi_document
from tests.conftest import require_root_runtime
from tests.daemon import Daemon, running_daemon
from tests.wsapi import create_image

schema = schemathesis.openapi.from_dict(openapi_document())
schema = schema.exclude(path_regex=r"^/(exec/start|images/(build|create|pull|push|save|load)|events|containers/stats|"
                                  r"containers/\{[^}]+\}/(attach|logs|archive/get|archive/put))$")
schema = schema.exclude(path_regex=r"^/registries/login$")  # would send generated hosts to the network
schema = schema.exclude(path_regex=r"^/networks/(create|prune|connect|\{[^}]+\}/disconnect/.*)$")
schema = schema.exclude(method="DELETE", path_regex=r"^/networks/")
schema = schema.exclude(path_regex=r"^/system/prune$")  # prunes networks too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def schema_daemon() -> Iterator[Daemon]:
    require_root_runtime()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kleened-schema-") as tmp, \
            running_daemon(Path(tmp), listeners=[{"address": f"http://127.0.0.1:{port}"}]) as d:
        create_image(d, tag="schemabox")
        d.extra["port"] = port
        yield d


@pytest.fixture
def base_url(schema_daemon: Daemon) -> str:
    return f"http://127.0.0.1:{schema_daemon.extra['port']}"


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_document(case, base_url):
    # Upstream's routes overlap (`DELETE /containers/{id}` also matches `/containers/list`, for a
    # container named "list"), so an OPTIONS `Allow` header lists methods of both templates. And
    # names, tags and paths have rules the document states in words, not patterns: a request
    # the schema allows may still be refused, with a 4xx that says why.
    case.call_and_validate(base_url=base_url, excluded_checks=[allow_header_conformance, positive_data_acceptance])
