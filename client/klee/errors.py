"""The errors klee reports: each one becomes one line on stderr and an exit code.

`main()` catches `KleeError` and prints its message. Exit code 125 follows docker: the command
could not run because of klee itself, its configuration or the daemon, as opposed to the exit
code of a process that ran in a container.
"""

from __future__ import annotations

import os
import sys

EXIT_FAILURE = 125
EXIT_BROKEN_PIPE = 141  # as a shell reports SIGPIPE


class KleeError(Exception):
    """Base of every error klee reports to the user."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(KleeError):
    """A flag, argument or configuration value klee cannot use."""


class ConnectionFailed(KleeError):
    """Kleened could not be reached (socket missing, refused, TLS handshake failed...)."""


class ApiError(KleeError):
    """Kleened answered with an error status; `message` is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def report(exc: KleeError | OSError) -> int:
    """Print an error that ends klee as one line on stderr (no traceback); return the exit code.

    A closed stdout (`klee logs c | head`) is not an error: klee exits quietly, as `cat` does.
    """
    if isinstance(exc, KleeError):
        message, code = exc.message, exc.exit_code
    elif isinstance(exc, BrokenPipeError):
        devnull = os.open(os.devnull, os.O_WRONLY)  # so that flushing stdout at exit cannot fail again
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    else:  # a local file or socket klee could not use
        message, code = f"Error! {exc}", EXIT_FAILURE
    print(message, file=sys.stderr, flush=True)
    return code
