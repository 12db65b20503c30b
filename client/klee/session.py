"""The state one klee run shares between its commands: settings, client and output.

Everything is resolved on first use, so `--help` never reads a config file and commands that
fail early never open a connection.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from klee import config

if TYPE_CHECKING:
    import httpx

    from klee.connection import Client
    from klee.printing import Output


class Session:
    def __init__(
        self,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.flags = dict(flags or {})
        self.environ = os.environ if environ is None else environ
        self.transport = transport  # tests inject an httpx.MockTransport here

    @functools.cached_property
    def settings(self) -> config.Settings:
        return config.resolve(self.flags, self.environ)

    @functools.cached_property
    def client(self) -> Client:
        from klee.connection import Client

        return Client(self.settings, transport=self.transport)

    @functools.cached_property
    def out(self) -> Output:
        from klee.printing import Output

        return Output(fancy=self.settings.theme == "fancy" and sys.stdout.isatty())

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()


def __getattr__(name: str) -> Any:
    """`pass_session`, the click decorator that hands commands the Session: made on first use,
    so that the fast path (`klee.fastpath`) can use Session without importing click."""
    if name == "pass_session":
        import click

        global pass_session
        pass_session = click.make_pass_decorator(Session)
        return pass_session
    raise AttributeError(name)
