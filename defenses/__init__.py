"""Defenses.  Each module registers its defenses (and training recipes) on import; the four kinds they implement
are in ``harness.core.defense``.  The package imports none of them: each defense, recipe and model is declared by name
in ``pyproject.toml`` (entry points ``harness.defenses``, ``harness.recipes``, ``harness.models``), and the registry
imports its module the first time it is asked for."""
