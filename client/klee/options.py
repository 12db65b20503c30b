"""One definition per option: the tables both klee's click commands and its fast parser
(`klee.fastpath`) are built from.

An `Opt` says everything about one option: its names, where its value goes (`dest`), whether it
is a switch, repeatable, its default, its help. `click_options(TABLE)` turns a table into click
decorators (imported only then); `klee.fastpath` reads the same tables to parse `run`, `exec`,
`start`, `attach` and `logs` without importing click. Adding an option to a table gives it to
both. An option only the click command knows (added there directly) is still correct: the fast
parser does not know it and hands the whole command line to click.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from klee.config import DEFAULT_HOST, THEMES
from klee.specs import NETWORK_DRIVERS, RESTART_POLICIES

USERNS = ("host", "remap")


class Opt(NamedTuple):
    names: tuple[str, ...]  # "--name", "-n"; long names first
    dest: str
    help: str
    flag: bool = False  # a switch: True when given
    secondary: tuple[str, ...] = ()  # a switch's "off" names ("--no-tlsverify")
    multiple: bool = False
    default: Any = None
    type: type | None = None  # int or float; None keeps the text
    minimum: int | None = None  # for an int: the smallest value (click.IntRange)
    choices: tuple[str, ...] | None = None  # checked by click.Choice
    metavar: str | None = None
    show_default: bool = False
    complete: str | tuple[str, ...] | None = None  # a klee.completion function, or choices to complete


def click_options(table: tuple[Opt, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a click command with the table's options, in the table's order."""
    import click

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(table):
            names = [*opt.names, *opt.secondary]
            decls = ["/".join((opt.names[0], opt.secondary[0])), *opt.names[1:]] if opt.secondary else names
            kwargs: dict[str, Any] = {"default": opt.default, "help": opt.help, "show_default": opt.show_default}
            if opt.flag and not opt.secondary:
                kwargs["is_flag"] = True
            if opt.multiple:
                kwargs["multiple"] = True
            if opt.choices is not None:
                kwargs["type"] = click.Choice(opt.choices)
            elif opt.minimum is not None:
                kwargs["type"] = click.IntRange(min=opt.minimum)
            elif opt.type is not None:
                kwargs["type"] = opt.type
            if opt.metavar is not None:
                kwargs["metavar"] = opt.metavar
            if opt.complete is not None:
                kwargs["shell_complete"] = _completer(opt.complete)
            function = click.option(*decls, opt.dest, **kwargs)(function)
        return function

    return decorate


def _completer(complete: str | tuple[str, ...]) -> Callable[..., Any]:
    from klee import completion

    if isinstance(complete, tuple):
        return completion.complete_choices(*complete)
    return getattr(completion, complete)


# --- root options -------------------------------------------------------------------------------

ROOT = (
    Opt(("--config",), "config", "Location of Klee config file."),
    Opt(("--theme",), "theme", "Theme used for Klee's output: 'fancy' (default; colours on terminals) or 'simple'.",
        choices=THEMES),
    Opt(("--host",), "host", f"Host address and protocol to use. Default is `{DEFAULT_HOST}`."),
    Opt(("--tlsverify",), "tlsverify", "Verify the server cert. Uses the CA bundle provided by Certifi, unless "
        "`tlscacert` is set.", flag=True, secondary=("--no-tlsverify",)),
    Opt(("--tlscert",), "tlscert", "Path to TLS certificate file used for client authentication (PEM)"),
    Opt(("--tlskey",), "tlskey", "Path to TLS key file used for the `tlscert` certificate (PEM)"),
    Opt(("--tlscacert",), "tlscacert", "Trust certs signed only by this CA (PEM). Implies `tlsverify`."),
)

# --- create and run ---------------------------------------------------------------------------

HELP_PUBLISH = (
    "Publish ports using the syntax HOST_PORT[:CONTAINER_PORT][/PROTOCOL] or "
    "INTERFACE:HOST_PORT:CONTAINER_PORT[/PROTOCOL]. CONTAINER_PORT defaults to HOST_PORT "
    "and PROTOCOL defaults to 'tcp'."
)
HELP_DRIVER = (
    "Network driver of the container: 'ipnet', 'host', 'vnet' or 'disabled'. Without `network` "
    "and `driver` the driver is 'host'; with a `network` but no `driver` it is 'ipnet'."
)
HELP_RESTART = (
    "Restart policy: 'no'; 'on-startup' (start whenever Kleened starts); 'always' (restart after every exit, "
    "and start with Kleened); 'unless-stopped' (as always, unless a user stopped it); 'on-failure[:N]' (restart "
    "after a non-zero exit, at most N times)."
)
ENV = Opt(("--env", "-e"), "env", "Set environment variables (e.g. `--env A=1 --env B=2`)", multiple=True,
          metavar="list")

CREATE = (
    Opt(("--name",), "name", "Assign a name to the container"),
    Opt(("--user", "-u"), "user", "Default user that runs commands in the container. The jail parameter "
        "`exec.jail_user` overrides it.", default=""),
    ENV,
    Opt(("--mount", "-m", "--volume", "-v"), "mount", "Mount a volume, directory or file into the container: "
        "SOURCE:DESTINATION[:rw|ro]", multiple=True, metavar="list"),
    Opt(("--jailparam", "-J"), "jailparam", "Set jail parameters, replacing Kleene's defaults of the same name.",
        multiple=True, metavar="list"),
    Opt(("--persist", "-P"), "persist", "Do not remove this container when pruning", flag=True, default=False),
    Opt(("--restart",), "restart", HELP_RESTART, default="no", show_default=True, complete=RESTART_POLICIES),
    Opt(("--driver", "-l"), "driver", HELP_DRIVER, complete=NETWORK_DRIVERS),
    Opt(("--network", "-n"), "network", "Connect the container to a network.", complete="complete_networks"),
    Opt(("--ip",), "ip", "IPv4 address on `network` (default: allocate an unused one)."),
    Opt(("--ip6",), "ip6", "IPv6 address on `network` (default: allocate an unused one)."),
    Opt(("--publish", "-p"), "publish", HELP_PUBLISH, multiple=True, metavar="list"),
)

LIMITS = (
    Opt(("--memory",), "memory", "Memory limit (e.g. 512m, 1g).", metavar="BYTES"),
    Opt(("--memory-swap",), "memory_swap", "Memory plus swap limit; -1: unlimited swap (default: twice --memory).",
        metavar="BYTES"),
    Opt(("--cpus",), "cpus", "Number of CPUs (a CPU quota, e.g. 1.5).", type=float),
    Opt(("--cpu-shares",), "cpu_shares", "CPU weight relative to others (1024 is normal).", type=int),
    Opt(("--pids-limit",), "pids_limit", "Maximum number of processes and threads; -1: no limit (default: "
        "kleened's, 2048).", type=int),
    Opt(("--ulimit",), "ulimit", "nofile or nproc limits.", multiple=True, metavar="NAME=SOFT[:HARD]"),
    Opt(("--security-opt",), "security_opt", "seccomp=unconfined, seccomp=default, or seccomp=PATH of a JSON "
        "profile.", multiple=True, metavar="seccomp=PROFILE"),
    Opt(("--userns",), "userns", "'host': no user namespace; 'remap': kleened's userns_remap range.", choices=USERNS),
)

HEALTH = (  # klee.health turns them into the body's `healthcheck`
    Opt(("--health-cmd",), "health_cmd", "Command to run to check health (through the image's shell).",
        metavar="COMMAND"),
    Opt(("--health-interval",), "health_interval", "Time between running the check (e.g. 30s, 1m; default 30s).",
        metavar="DURATION"),
    Opt(("--health-timeout",), "health_timeout", "Maximum time to allow one check to run (default 30s).",
        metavar="DURATION"),
    Opt(("--health-start-period",), "health_start_period", "Start period for the container to initialize: failures "
        "do not count (default 0s).", metavar="DURATION"),
    Opt(("--health-start-interval",), "health_start_interval", "Time between running the check during the start "
        "period (default 5s).", metavar="DURATION"),
    Opt(("--health-retries",), "health_retries", "Consecutive failures needed to report unhealthy (default 3).",
        type=int, minimum=0),
    Opt(("--no-healthcheck",), "no_healthcheck", "Disable any container-specified HEALTHCHECK.", flag=True,
        default=False),
)

# --- starting processes -----------------------------------------------------------------------

EXEC_MODES = (
    Opt(("--detach", "-d"), "detach", "Do not stream the process's output; return once it has started.", flag=True,
        default=False),
    Opt(("--interactive", "-i"), "interactive", "Send terminal input to the process's STDIN. If set, `detach` is "
        "ignored.", flag=True, default=False),
    Opt(("--tty", "-t"), "tty", "Allocate a pseudo-TTY", flag=True, default=False),
)
CONTAINER = (*CREATE, *LIMITS, *HEALTH)  # every option of `create`
RUN = (*CONTAINER, *EXEC_MODES,
       Opt(("--rm",), "remove", "Remove the container when its process has exited.", flag=True, default=False))
EXEC = (*EXEC_MODES, ENV, Opt(("--user", "-u"), "user", "Username or UID of the user running the process", default=""))

# --- attach and logs --------------------------------------------------------------------------

ATTACH = (
    Opt(("--no-stdin",), "no_stdin", "Do not send klee's input to the container.", flag=True, default=False),
    Opt(("--detach-keys",), "detach_keys", "Key sequence that detaches (default: kleened's, ctrl-p,ctrl-q).",
        default=""),
    Opt(("--logs",), "recent", "First print the last N lines the container wrote in this run.", type=int, minimum=0,
        default=0, metavar="N"),
)
LOGS = (
    Opt(("--follow", "-f"), "follow", "Follow the output until the container stops.", flag=True, default=False),
    Opt(("--tail", "-n"), "tail", "Number of lines to show from the end.", default="all", show_default=True),
    Opt(("--since",), "since", "Show lines since a time (e.g. 2024-05-01T12:00:00Z) or duration (10m)."),
    Opt(("--until",), "until", "Show lines before a time or duration ago."),
    Opt(("--timestamps", "-t"), "timestamps", "Show the time each line was read.", flag=True, default=False),
)
