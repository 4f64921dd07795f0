"""The built-in plugins: importing their modules registers them (datasets, models, zoo, attacks, defenses, recipes).

This module sits above every plugin package (``harness.data``, ``harness.models``, ``attacks``, ``defenses``); the
registries themselves (``harness.core.registry``) import none of them.
"""
from __future__ import annotations


def load_builtins() -> None:
    """Import the built-in plugin modules so that they register themselves (cheap after the first call)."""
    import attacks  # noqa: F401
    import defenses  # noqa: F401
    import harness.data  # noqa: F401
    import harness.models  # noqa: F401
