"""Upstream klee's volume commands against our daemon, with upstream's outputs."""

from __future__ import annotations

import json
import secrets


def volume_rows(lines: list[str]) -> list[str]:
    """The volume names of a `volume ls` table, in order, every row checked to end in a CREATED time."""
    rows = [line.split() for line in lines[1:] if line.strip() and not set(line.strip()) <= set("─━-+| ")]
    assert all(row[-1] == "ago" for row in rows), lines
    return [row[0] for row in rows]


def test_volume_create_ls_inspect_rm(klee):
    name = f"cv{secrets.token_hex(3)}"
    r = klee("volume", "create", name)
    assert r.returncode == 0 and r.lines == [name]
    ls = klee("volume", "ls")
    assert ls.returncode == 0
    assert ls.lines[0].split() == ["VOLUME", "NAME", "CREATED"]
    row = next(line for line in ls.lines if name in line)
    assert "ago" in row
    # The CREATED column renders the clock ("9 seconds ago", "10 seconds ago"): the two listings
    # may differ in width, so compare their parsed rows.
    assert volume_rows(klee("lsv").lines) == volume_rows(ls.lines)
    inspect = json.loads(klee("volume", "inspect", name).stdout)
    assert inspect["volume"]["name"] == name and inspect["mountpoints"] == []
    assert json.loads(klee("isv", name).stdout) == inspect
    rm = klee("volume", "rm", name)
    assert rm.returncode == 0 and rm.lines == [name]
    assert klee("volume", "inspect", name).lines == ["No such volume"]


def test_volume_rm_reports_unknown_volumes(klee):
    name = f"cv{secrets.token_hex(3)}"
    klee("volume", "create", name)
    r = klee("rmv", name, "doesnotexist")
    assert r.lines == [name, "No such volume"]


def test_volume_prune(klee):
    names = [f"cp{secrets.token_hex(3)}" for _ in range(2)]
    for n in names:
        klee("volume", "create", n)
    r = klee("volume", "prune", "-f")
    assert r.returncode == 0 and set(names) <= set(r.lines)
    assert not any(n in klee("volume", "ls").stdout for n in names)


def test_volume_prune_prompts_without_force(klee):
    name = f"cq{secrets.token_hex(3)}"
    klee("volume", "create", name)
    r = klee("volume", "prune", input="n\n")
    assert "WARNING! This will remove all unused volumes." in r.stdout
    assert name in klee("volume", "ls").stdout
    klee("volume", "rm", name)
