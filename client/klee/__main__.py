"""`klee` and `python -m klee`: the fast path for the hot commands, click for everything else."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run klee; return its exit code (the process's own for `run` and `exec`, 125 for klee's errors).

    `run`, `exec`, `start`, `attach` and `logs` with a plain command line go through
    `klee.fastpath`, without importing click or rich; anything else (and any line the fast
    parser does not fully understand) goes to the click commands of `klee.cli`.
    `KLEE_FASTPATH=0` sends everything to click (to compare the two).
    """
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get("KLEE_FASTPATH") != "0":
        from klee import fastpath

        parsed = fastpath.parse(args)
        if parsed is not None:
            from klee.errors import KleeError, report

            try:
                return fastpath.run(parsed)
            except (KleeError, OSError) as exc:
                return report(exc)
            except KeyboardInterrupt:
                return 130
    from klee.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
