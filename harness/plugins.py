"""Every installed plugin at once: the built-in datasets, models, zoo, attacks, defenses and recipes, and those of
third-party packages, all found through their entry points (``harness.core.entry_points``; the built-ins are
declared in this project's ``pyproject.toml``).

The registries load their plugins on first use by themselves; ``load_builtins`` is for code that reads a registry's
entries before asking for any by name (scripts, tests).  The harness imports no plugin package: ``attacks`` and
``defenses`` are reached only through the entry points, as a third party's plugins are.
"""
from __future__ import annotations

from harness.core.registry import REGISTRIES


def load_builtins() -> None:
    """Import every declared plugin of every registry (cheap after the first call)."""
    for registry in REGISTRIES.values():
        registry.load_all()
