"""The regression gate's command entry (``harness check``); the gate itself is the package ``harness.gate``."""
from __future__ import annotations

from harness.gate import compare, run_check

__all__ = ["compare", "run_check"]
