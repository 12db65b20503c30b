"""kleened: the Kleene daemon."""

__version__ = "0.1.0"
