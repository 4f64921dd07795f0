"""Adversarial attack-defense evaluation harness.

Layers, bottom up: ``harness.core`` (contracts and mechanisms, no project imports) <- ``harness.data``,
``harness.models`` <- the plugins ``attacks`` and ``defenses`` (and ``harness.bounds``) <- the engine
(``harness.threat``, ``harness.evaluate``, ``harness.report``, ``harness.check``) <- assembly
(``harness.plugins``, ``harness.assembly``) <- the command line (``harness.cli``, ``harness.certify``).
See docs/ARCHITECTURE.md.
"""
__version__ = "0.1.0"
