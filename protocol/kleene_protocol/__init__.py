"""Kleene's wire protocol: every message the daemon and the CLI exchange.

This package imports nothing of `kleened` or `klee`; both import it. The JSON names, defaults
and enums follow upstream kleened (API 0.1.1) exactly; our extensions are new optional fields
and new endpoints, so an upstream client never sees a difference it cannot parse.
"""

API_VERSION = "0.1.1"
