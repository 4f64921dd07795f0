"""Where plugins imported the exceptions from before they moved to the floor: the same classes, re-exported for
third-party packages.  New code imports ``harness.core.errors``."""
from harness.core.errors import DataError, UsageError

__all__ = ["DataError", "UsageError"]
