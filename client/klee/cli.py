"""The `klee` command: root options, command groups, shortcuts and `main()`.

Command modules are imported only when their command runs, and the root help is written from
the table below, so `klee --help` loads click and nothing else.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from klee import __version__
from klee.errors import EXIT_FAILURE, KleeError, report
from klee.options import ROOT, click_options
from klee.session import Session

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "container": ("klee.commands.container", "container", "Manage containers"),
    "image": ("klee.commands.oci", "image", "Manage images"),  # the group, with build, pull, push, save, load
    "builder": ("klee.commands.builder", "builder", "Manage the image builder's caches"),
    "network": ("klee.commands.network", "network", "Manage networks"),
    "volume": ("klee.commands.volume", "volume", "Manage volumes"),
    "system": ("klee.commands.system", "system", "Manage kleened (info, disk usage, prune)"),
    "version": ("klee.commands.version", "version", "Show the version of klee and kleened"),
    "completion": ("klee.completion", "completion", "Print the shell completion script (bash, zsh or fish)"),
    "login": ("klee.commands.oci", "login", "Log in to a registry"),
    "logout": ("klee.commands.oci", "logout", "Forget the credentials of a registry"),
    "attach": ("klee.commands.streams", "attach", "Attach to a running container's main process"),
    "logs": ("klee.commands.streams", "logs", "Print a container's log"),
    "events": ("klee.commands.streams", "events", "Print kleened's events as they happen"),
    "stats": ("klee.commands.stats", "stats", "Show live resource usage of running containers"),
    "top": ("klee.commands.stats", "top", "List the processes of a running container"),
}

# shortcut -> (group, command)
SHORTCUTS: dict[str, tuple[str, str]] = {
    "build": ("image", "build"),
    "pull": ("image", "pull"),
    "push": ("image", "push"),
    "save": ("image", "save"),
    "load": ("image", "load"),
    "commit": ("container", "commit"),
    "cp": ("container", "cp"),
    "create": ("container", "create"),
    "exec": ("container", "exec"),
    "ps": ("container", "ls"),
    "rm": ("container", "rm"),
    "images": ("image", "ls"),
    "restart": ("container", "restart"),
    "run": ("container", "run"),
    "start": ("container", "start"),
    "stop": ("container", "stop"),
    "isc": ("container", "inspect"),
    "isi": ("image", "inspect"),
    "isn": ("network", "inspect"),
    "isv": ("volume", "inspect"),
    "lsc": ("container", "ls"),
    "lsi": ("image", "ls"),
    "lsn": ("network", "ls"),
    "lsv": ("volume", "ls"),
    "rmc": ("container", "rm"),
    "rmi": ("image", "rm"),
    "rmn": ("network", "rm"),
    "rmv": ("volume", "rm"),
}

KINDS = "[c]ontainer, [i]mage, [n]etwork, or [v]olume"
SHORTCUT_FAMILIES = (
    ("isX", f"Inspect an object, where X is {KINDS}."),
    ("lsX", f"List objects, where X is {KINDS}."),
    ("rmX", f"Remove one or more objects, where X is {KINDS}."),
)


class KleeGroup(click.Group):
    """The root group: loads command modules on demand and lists the shortcuts in its help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS) + sorted(SHORTCUTS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attribute, _help = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        if cmd_name in SHORTCUTS:
            group_name, name = SHORTCUTS[cmd_name]
            group = self.get_command(ctx, group_name)
            assert isinstance(group, click.Group)
            return group.get_command(ctx, name)
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in sorted(COMMANDS)])
        singles = [
            (name, f"Shortcut for 'klee {' '.join(target)}'.")
            for name, target in SHORTCUTS.items()
            if not name.startswith(("is", "ls", "rm")) or name == "rm"
        ]
        with formatter.section("Shortcuts"):
            formatter.write_dl(sorted(singles) + list(SHORTCUT_FAMILIES))


@click.group(cls=KleeGroup, name="klee")
@click.version_option(__version__, "--version", prog_name="klee")
@click_options(ROOT)
@click.pass_context
def cli(ctx: click.Context, **flags: Any) -> None:
    """CLI to interact with Kleened."""
    session = ctx.ensure_object(Session)
    session.flags.update({key: value for key, value in flags.items() if value is not None})
    ctx.call_on_close(session.close)


def main(argv: list[str] | None = None) -> int:
    """Run klee; return its exit code (the process's own for `run` and `exec`, 125 for klee's errors)."""
    _skip_optional_imports()
    try:
        result = cli.main(args=argv, prog_name="klee", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:  # one line, as every klee error (click's own shows the usage too)
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        return EXIT_FAILURE
    except click.ClickException as exc:
        exc.show()
        return EXIT_FAILURE
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return 130  # Ctrl-C, as a shell reports SIGINT (click already ended the line)
        click.echo("Aborted!", err=True)
        return 1
    except (KleeError, OSError) as exc:
        return report(exc)
    return result if isinstance(result, int) else 0


def _skip_optional_imports() -> None:
    """Keep httpx from loading what klee never uses: about 150 ms at every start.

    httpx imports its own command line (rich, pygments) at import time; httpcore imports trio,
    anyio and h2 whenever they are installed (they are, in a venv shared with kleened), for
    async and HTTP/2 support klee does not use. A None entry in `sys.modules` makes these
    optional imports fail at once, as if the packages were absent. This runs only in the
    klee process (here, in `main`), never on import of a klee module, so a test session that
    also imports kleened is unaffected.
    """
    for name in ("httpx._main", "trio", "anyio", "h2"):
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
