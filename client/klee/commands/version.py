"""`klee version`: the versions of klee and of the kleened it talks to (`GET /version`).

`GET /version` is our extension; upstream kleened answers 404, which is reported as a
daemon that does not tell its version.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from klee import __version__
from klee.errors import ApiError, KleeError
from klee.session import Session, pass_session


@click.command(name="version")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the versions as JSON.")
@pass_session
def version(session: Session, as_json: bool) -> None:
    """Show the version of klee and of kleened"""
    from kleene_protocol import API_VERSION

    client = {"version": __version__, "api_version": API_VERSION, "python": ".".join(map(str, sys.version_info[:3]))}
    server, error = _server_version(session)
    if as_json:
        click.echo(json.dumps({"client": client, "server": server}, indent=2))
    else:
        session.out.lines(_client_lines(client, session.settings.host))
        if server is not None:
            session.out.line("")
            session.out.lines(server_lines(server))
    if server is None:
        raise KleeError(error)


def _server_version(session: Session) -> tuple[dict[str, Any] | None, str]:
    """kleened's `Version` reply, or None and the reason it is missing."""
    try:
        server = session.client.get("/version")
    except ApiError as exc:
        if exc.status == 404:
            return None, "kleened does not report its version (it has no GET /version)"
        return None, exc.message
    except KleeError as exc:
        return None, exc.message
    if not isinstance(server, dict):
        return None, "Error! Unexpected response received from Kleened."
    return server, ""


def _client_lines(client: dict[str, str], host: str) -> list[str]:
    return [
        "Client:",
        f" Version:      {client['version']}",
        f" API version:  {client['api_version']}",
        f" Python:       {client['python']}",
        f" Host:         {host}",
    ]


def server_lines(server: dict[str, Any]) -> list[str]:
    """The `Server:` block of `klee version` for a `Version` reply."""
    runtimes = ", ".join(
        f"{item.get('name', '?')} {item.get('version', '?')}"
        for item in server.get("runtimes") or []
        if isinstance(item, dict)
    )
    return [
        "Server:",
        f" Version:      {server.get('version', '')}",
        f" API version:  {server.get('api_version', '')}",
        f" Platform:     {server.get('platform', '')}",
        f" Python:       {server.get('python', '')}",
        f" Runtimes:     {runtimes or '-'}",
    ]
