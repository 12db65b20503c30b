"""Running a klee (ours or upstream's) as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def err_lines(self) -> list[str]:
        """stderr's lines: our klee's status lines (created, exited) are there, not on stdout."""
        return self.stderr.splitlines()


Klee = Callable[..., Result]


def run_cli(argv: Sequence[str], *, input: str | None = None, timeout: float = 60, env: dict | None = None,
            cwd: Path | None = None) -> Result:
    """Run `argv` with no KLEE_* variables of ours leaking in, a wide terminal and no colours."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("KLEE_", "_KLEE"))}
    environment.update({"COLUMNS": "200", "TERM": "dumb", **(env or {})})
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout,
                          env=environment, cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_klee(host: str, *args: str, flags: list[str] | None = None, env: dict[str, str] | None = None,
             timeout: float = 120, input: str | None = None, cwd: Path | None = None) -> Result:
    """Our klee against `host`, with no config file of the user's."""
    return run_cli([sys.executable, "-m", "klee", "--host", host, *(flags or []), *args],
                   env={"HOME": "/nonexistent", **(env or {})}, timeout=timeout, input=input, cwd=cwd)
