"""Simulated `pfctl`: parses rulesets with pfparse (a syntax error or an undefined macro refuses
the whole load and keeps the old rules, as pfctl does), keeps the main ruleset and each anchor's,
and enables/disables pf (`-e` twice: "pf already enabled", exit 1).

Options: `-f file|-`, `-n` (parse only), `-a anchor`, `-s rules|nat|Anchors`, `-F all|rules|nat`,
`-e`, `-d`, `-v` (ignored).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .pfparse import PfError, parse
from .state import Refused, State, Unsupported, out


def _load(state: State) -> dict:
    return state.load("pf", {"enabled": False, "main": [], "anchors": {}})


def _show(rules: list[dict], kind: str) -> None:
    wanted = ("nat", "rdr", "nat-anchor", "rdr-anchor") if kind == "nat" else ("filter", "anchor")
    out("".join(r["text"] + "\n" for r in rules if r["kind"] in wanted))


def main(state: State, argv: list[str]) -> int:
    data = _load(state)
    args = [a for a in argv if a != "-v"]
    anchor = args[args.index("-a") + 1] if "-a" in args else None
    if "-e" in args:
        if data["enabled"]:
            raise Refused("pfctl: pf already enabled")
        data["enabled"] = True
        out("pf enabled\n")
    elif "-d" in args:
        if not data["enabled"]:
            raise Refused("pfctl: pf not enabled")
        data["enabled"] = False
        out("pf disabled\n")
    elif "-f" in args:
        source = args[args.index("-f") + 1]
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        try:
            rules = [r.__dict__ for r in parse(text)]
        except PfError as exc:
            name = "stdin" if source == "-" else source
            raise Refused(f"{name}:{exc.line}: {exc.message}\n"
                          "pfctl: Syntax error in config file: pf rules not loaded") from None
        if "-n" not in args:
            if anchor is None:
                data["main"] = rules
            else:
                data["anchors"][anchor] = rules
    elif "-s" in args:
        kind = args[args.index("-s") + 1]
        if kind == "Anchors":
            out("".join(f"  {name}\n" for name in sorted(data["anchors"])))
        elif kind in ("rules", "nat"):
            _show(data["anchors"].get(anchor, []) if anchor else data["main"], kind)
        else:
            raise Unsupported(f"pfctl -s {kind}")
    elif "-F" in args:
        if anchor is None:
            data["main"] = []
        else:
            data["anchors"].pop(anchor, None)
    else:
        raise Unsupported(f"pfctl {' '.join(argv)}")
    state.save("pf", data)
    return 0
