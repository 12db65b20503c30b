"""The few error classes core raises, in the errdefs style.

Each carries the exact message a client sees (upstream's texts where upstream has one). The
`api` layer maps classes to HTTP statuses in one table; a route may override a class's status
to match upstream (container create answers 404 for every failure, for instance).
"""


class KleeneError(Exception):
    """Base of every error meant for a client. `message` is shown as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(KleeneError):
    pass


class AlreadyExists(KleeneError):
    pass


class InvalidArgument(KleeneError):
    pass


class Conflict(KleeneError):
    """The object's current state forbids the operation (e.g. removing a running container)."""


class Ambiguous(KleeneError):
    """An ident matches several objects."""


class Unavailable(KleeneError):
    """A backend feature this host does not have (e.g. zfs-clone on the overlay driver)."""


class Internal(KleeneError):
    pass


class ExecFailed(KleeneError):
    """A process could not be started for a reason that is the user's (no such executable, not
    executable): reported like the process's own failure, with a shell's exit code (127, 126)."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
