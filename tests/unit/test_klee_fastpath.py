"""The fast path's parser against click's: for the same command line, the same values, or a
fallback to click; the option tables build both; the fast path imports neither click nor rich."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klee import fastpath
from klee import options as opts
from klee.cli import cli
from klee.commands.run import exec_, run, start
from klee.commands.streams import attach, logs
from klee.session import Session

CLICK = {"run": run, "exec": exec_, "start": start, "attach": attach, "logs": logs}


def click_params(command: str, args: list[str]) -> dict[str, Any]:
    ctx = CLICK[command].make_context(command, list(args), obj=Session())
    return {key: (tuple(value) if isinstance(value, list) else value) for key, value in ctx.params.items()}


def click_root(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    ctx = cli.make_context("klee", list(args), obj=Session())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click 9 moves the subcommand into `args`
        return {k: v for k, v in ctx.params.items() if v is not None}, [*ctx.protected_args, *ctx.args]


SAME = [
    ["run", "bb"],
    ["run", "--rm", "-l", "disabled", "bb", "echo", "hi"],
    ["run", "-it", "--name", "web", "-e", "A=1", "-eB=2", "-m", "v:/data", "-v", "/tmp:/t:ro", "bb", "sh", "-c", "x"],
    ["run", "-d", "--network=net", "--ip", "10.0.0.2", "-p", "80", "-p", "em0:8080:80/udp", "-P", "bb"],
    ["run", "--memory", "64m", "--cpus", "1.5", "--pids-limit", "-1", "--ulimit", "nofile=10:20", "--userns", "host",
     "bb", "true"],
    ["run", "--restart", "on-startup", "-J", "allow.raw_sockets=true", "--user", "root", "bb", "ls", "--all", "-l"],
    ["run", "-itd", "bb", "--", "-x"],
    ["run", "--restart", "on-failure:3", "--health-cmd", "test -f /ok", "--health-retries", "2", "--no-healthcheck",
     "--health-interval=5s", "bb"],
    ["exec", "c1", "echo", "hi"],
    ["exec", "-t", "-u", "nobody", "c1", "sh", "-c", "exit 3"],
    ["exec", "-dit", "-e", "A=1", "c1"],
    ["exec", "--env=A=1", "--user=0", "c1", "-la"],
    ["exec", "c1"],
    ["start", "c1"],
    ["start", "-d", "c1", "c2"],
    ["start", "c1", "-i"],
    ["attach", "c1"],
    ["attach", "--no-stdin", "--detach-keys", "ctrl-x", "--logs", "5", "c1"],
    ["logs", "-f", "-n", "10", "--since", "10m", "-t", "c1"],
    ["logs", "c1", "--until=1h"],
]


@pytest.mark.parametrize("argv", SAME, ids=[" ".join(a) for a in SAME])
def test_fast_parse_matches_click(argv):
    parsed = fastpath.parse(argv)
    assert parsed is not None, argv
    assert parsed.command == argv[0]
    assert parsed.options == click_params(argv[0], argv[1:])


@pytest.mark.parametrize("argv", [
    ["--host", "http:///tmp/k.sock", "exec", "c1", "true"],
    ["--host=https://10.0.0.1:8085", "--tlsverify", "--tlscacert", "/ca.pem", "container", "exec", "c1", "true"],
    ["--no-tlsverify", "--theme", "simple", "--config", "/k.yaml", "logs", "c1"],
])
def test_root_options_match_click(argv):
    parsed = fastpath.parse(argv)
    assert parsed is not None
    root, rest = click_root(argv)
    assert parsed.root == root
    command = next(word for word in rest if word != "container")
    assert parsed.options == click_params(command, rest[rest.index(command) + 1:])


@pytest.mark.parametrize("argv", [
    [], ["run"], ["exec"], ["start"], ["attach"], ["logs"],  # click prints the usage
    ["run", "--help"], ["exec", "-h"], ["--help"], ["--version"],  # help and version are click's
    ["run", "--no-such-flag", "bb"], ["exec", "-Z", "c1"],  # unknown options: click's error
    ["run", "--cpus", "many", "bb"], ["run", "--userns", "other", "bb"], ["attach", "--logs", "-1", "c1"],
    ["--theme", "loud", "exec", "c1"],  # bad values: click's error text
    ["run", "--name"], ["exec", "-u"],  # a value is missing
    ["run", "--rm=yes", "bb"],  # a switch given a value
    ["attach", "c1", "c2"], ["logs", "c1", "c2"],  # too many arguments
    ["container", "ls"], ["ps"], ["image", "build", "."], ["container"],  # not a hot command
    ["create", "bb"],  # not a hot command
])
def test_anything_else_falls_back_to_click(argv):
    assert fastpath.parse(argv) is None


def test_every_table_option_reaches_click_with_the_same_names():
    for name, command in CLICK.items():
        click_names = {n for p in command.params if isinstance(p, click.Option) for n in (*p.opts, *p.secondary_opts)}
        table_names = {n for opt in fastpath.COMMANDS[name].table for n in (*opt.names, *opt.secondary)}
        assert click_names == table_names, name
    root_names = {n for p in cli.params if isinstance(p, click.Option) for n in (*p.opts, *p.secondary_opts)}
    assert root_names - {"--version", "--help"} == {n for opt in opts.ROOT for n in (*opt.names, *opt.secondary)}


def test_each_option_is_defined_once_per_table():
    for table in (opts.ROOT, opts.RUN, opts.EXEC, opts.ATTACH, opts.LOGS, opts.EXEC_MODES):
        names = [n for opt in table for n in (*opt.names, *opt.secondary)]
        dests = [opt.dest for opt in table]
        assert len(names) == len(set(names)) and len(dests) == len(set(dests))


WORDS = st.sampled_from(["bb", "c1", "echo", "hi", "-", "--", "-x", "--all", "x=1", "10", "/tmp:/t"])
RUN_TOKENS = st.lists(st.one_of(
    st.sampled_from([["-d"], ["-i"], ["-t"], ["-it"], ["--rm"], ["-P"], ["--persist"]]),
    st.tuples(st.sampled_from(["--name", "-e", "-m", "-v", "--volume", "-p", "-l", "-n", "--ip", "-u", "--memory",
                               "--cpus", "--restart", "-J"]),
              st.sampled_from(["a", "A=1", "v:/d", "80", "host", "1.5", "64m", "no", "-1", "x"])).map(list),
    WORDS.map(lambda w: [w]),
), max_size=8)


@settings(max_examples=300, deadline=None)
@given(tokens=RUN_TOKENS, command=st.sampled_from(["run", "exec", "start"]))
def test_fast_parse_agrees_with_click_on_random_lines(tokens, command):
    args = [word for token in tokens for word in token]
    parsed = fastpath.parse([command, *args])
    try:
        expected = click_params(command, args)
    except click.ClickException:
        assert parsed is None  # what click refuses, the fast path leaves to click
        return
    if parsed is not None:
        assert parsed.options == expected


def test_the_fast_path_imports_neither_click_nor_rich(tmp_path):
    code = (f"import sys; from klee.__main__ import main; rc = main(['--host', 'http://{tmp_path}/none.sock', 'exec', "
            "'c1', 'true']); print(rc, 'click' in sys.modules, 'rich' in sys.modules, 'httpx' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["125", "False", "False", "False"], proc
    assert proc.stderr.startswith("unable to connect to kleened") and len(proc.stderr.splitlines()) == 1
