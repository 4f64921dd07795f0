"""Adversarial attack-defense evaluation harness.

The public API (docs/API.md)::

    import harness
    results = harness.evaluate(model, (x, y), attacks=["fgsm", "pgd_linf"], eps=0.1)
    print(results.table()); results.save("runs/mine")

``evaluate``, ``load_model``, ``load_data``, ``load_results``, ``Results`` and ``RunSpec`` are imported on first
use, so ``import harness`` stays light.  Layers, bottom up: ``harness.core`` (contracts and mechanisms, no project
imports) <- ``harness.data``, ``harness.models`` <- the plugins ``attacks`` and ``defenses`` (and
``harness.bounds``) <- the engine (``harness.threat``, ``harness.engine``, ``harness.report``, ``harness.check``)
<- the run (``harness.spec``, ``harness.build``, ``harness.results``, ``harness.api``) <- the command line
(``harness.cli``, ``harness.commands``).  See docs/ARCHITECTURE.md.
"""
__version__ = "0.1.0"

_API = {"evaluate": "api", "load_model": "api", "load_data": "api", "load_results": "results",
        "Results": "results", "RunSpec": "spec", "build": "build"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"harness.{_API[name]}"), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


__all__ = list(_API)
