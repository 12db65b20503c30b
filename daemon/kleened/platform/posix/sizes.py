"""Disk usage of a directory tree, the same on every platform."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def tree_size(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of file content under `path` (0 when it is gone); never follows a link."""
    seen = set() if seen is None else seen
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue  # removed meanwhile
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            if st.st_nlink > 1:
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
