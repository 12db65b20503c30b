"""Shell completion: `klee completion bash|zsh|fish`, and the names offered for arguments.

The scripts are click's own: the shell runs `klee` again with `_KLEE_COMPLETE=<shell>_complete`
and the words typed so far, and click answers with the candidates. Commands, options and
choices come from the command tree; container, image, network and volume names come from the
daemon, through the callbacks below (`shell_complete=` on arguments and options). They ask the
daemon the root options point at (`--host`, TLS flags, environment, config file), give up after
`TIMEOUT` seconds and offer nothing when it cannot be reached: completion never prints an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
TIMEOUT = 2.0  # seconds; a shell waiting for completion should not hang on a dead daemon
COMPLETE_VAR = "_KLEE_COMPLETE"

INSTALL = """\
\b
bash:  eval "$(klee completion bash)"                  # in ~/.bashrc, or:
       klee completion bash > ~/.local/share/bash-completion/completions/klee
zsh:   eval "$(klee completion zsh)"                   # in ~/.zshrc, after compinit
fish:  klee completion fish > ~/.config/fish/completions/klee.fish
"""


@click.command(name="completion", help=f"Print the shell completion script for SHELL.\n\n{INSTALL}")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    from click.shell_completion import get_completion_class

    from klee.cli import cli

    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(cli, {}, "klee", COMPLETE_VAR).source(), nl=False)


def _query(ctx: click.Context, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """GET `path` from the daemon the root options name; [] on any failure."""
    try:
        from klee import config
        from klee.connection import Client

        flags = {key: value for key, value in ctx.find_root().params.items() if value is not None}
        settings = config.resolve(flags, os.environ, warn=lambda _message: None)
        client = Client(settings, timeout=TIMEOUT)
        try:
            reply = client.get(path, params=params)
        finally:
            client.close()
    except Exception:  # completion must stay silent: no daemon, bad config, bad reply...
        return []
    return [item for item in reply if isinstance(item, dict)] if isinstance(reply, list) else []


def _matching(incomplete: str, candidates: Iterable[tuple[str, str]]) -> list[CompletionItem]:
    """CompletionItems for the (value, help) pairs whose value starts with `incomplete`, once each."""
    seen: set[str] = set()
    items = []
    for value, help_text in candidates:
        if value and value.startswith(incomplete) and value not in seen:
            seen.add(value)
            items.append(CompletionItem(value, help=help_text))
    return items


def complete_containers(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Container names (and ids once something is typed), running or not."""
    containers = _query(ctx, "/containers/list", {"all": "true"})
    candidates = []
    for item in containers:
        cid, name = str(item.get("id", "")), str(item.get("name") or "")
        state = "running" if item.get("running") else "stopped"
        candidates.append((name, f"{cid} ({state})"))
        if incomplete:
            candidates.append((cid, f"{name} ({state})"))
    return _matching(incomplete, candidates)


def complete_images(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Images as `name:tag` (and ids once something is typed)."""
    candidates = []
    for item in _query(ctx, "/images/list"):
        image_id, name, tag = str(item.get("id", "")), str(item.get("name") or ""), str(item.get("tag") or "")
        if name:
            candidates.append((f"{name}:{tag}" if tag else name, image_id))
        if incomplete or not name:
            candidates.append((image_id, f"{name}:{tag}" if name else "untagged"))
    return _matching(incomplete, candidates)


def complete_networks(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Network names (and ids once something is typed)."""
    candidates = []
    for item in _query(ctx, "/networks/list"):
        network_id, name = str(item.get("id", "")), str(item.get("name") or "")
        candidates.append((name, f"{item.get('type', '')} {item.get('subnet') or item.get('subnet6') or ''}".strip()))
        if incomplete:
            candidates.append((network_id, name))
    return _matching(incomplete, candidates)


def complete_volumes(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Volume names."""
    return _matching(incomplete, ((str(item.get("name", "")), "volume") for item in _query(ctx, "/volumes/list")))


def complete_choices(*choices: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A completer offering fixed values, for options that check their value themselves."""

    def complete(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return [CompletionItem(choice) for choice in choices if choice.startswith(incomplete)]

    return complete
