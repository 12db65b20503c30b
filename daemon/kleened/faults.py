"""Named fault points, for the tests that kill the daemon in the middle of an operation.

`point(name)` does nothing unless the environment variable `KLEENED_FAULT_POINT` names that
point when the daemon starts; then the daemon kills itself there with SIGKILL, as a crash or
`kill -9` would, so a test can check that the next start cleans up and loses nothing. The
variable is read once; production daemons never set it, and then each point costs one string
comparison.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_ARMED = os.environ.get("KLEENED_FAULT_POINT", "")


def point(name: str) -> None:
    if _ARMED and name == _ARMED:
        log.warning("fault point reached: killing the daemon", extra={"point": name})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
