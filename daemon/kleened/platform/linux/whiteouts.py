"""overlayfs's form of deleted entries, to and from OCI whiteouts.

overlay hides a lower entry with a character device 0/0 of the same name in an upper layer,
and a lower directory's whole content with the `trusted.overlay.opaque` xattr set to `y` on
the upper directory (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque
directories"). Both need root (mknod, trusted.* xattrs), as the daemon is.
"""

from __future__ import annotations

import os
import stat

OPAQUE_XATTR = "trusted.overlay.opaque"


class OverlayWhiteouts:
    """`posix_tar.Whiteouts` for overlay layer directories, plus the reverse checks for export."""

    def whiteout(self, path: str) -> None:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def opaque(self, directory: str) -> None:
        os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)

    def is_whiteout(self, st: os.stat_result) -> bool:
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

    def is_opaque(self, directory: str) -> bool:
        try:
            return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
        except OSError:
            return False
