"""A pytest helper for teams that keep robustness checks in their own test suite (docs/CI.md).

    from harness.testing import assert_robust

    def test_robustness_did_not_fall(tmp_path):
        assert main(["run", ..., "--out", str(tmp_path)]) == 0      # or a run made earlier in the session
        assert_robust(tmp_path, baseline="reports/baselines/NAME.csv")

``assert_robust`` is ``harness check`` as a function: the same content keys, comparability rules and noise-aware
verdict (``harness.gate``).  A regression (or, with ``fail_on_flags``, a masking flag, or a robust accuracy below
``min_robust_acc``) raises ``AssertionError`` whose message is the gate's table; files that cannot be compared
(other data, n, seed or weights, bad values) raise ``harness.core.errors.UsageError`` with the reason.
"""
from __future__ import annotations

import os

from .gate import Outcome, compare
from .gate.output import text
from .gate.read import label, read_table


def assert_robust(results: str | os.PathLike, baseline: str | os.PathLike | None = None, *, tolerance: float = 1.0,
                  alpha: float = 0.05, strict: bool = False, allow_seed_change: bool = False,
                  allow_model_change: bool = False, fail_on_flags: bool = False,
                  min_robust_acc: float | dict[str, float] | None = None) -> Outcome | None:
    """Assert that ``results`` (a results.csv or its run / grid folder) did not regress against ``baseline``.

    ``min_robust_acc``: also (or, without a baseline, only) a floor in percent on robust accuracy: a number for
    every ``worst-case`` row, or ``{attack: floor}`` for the rows of those attacks.  Returns the gate's
    ``Outcome`` (None without a baseline)."""
    if baseline is None and min_robust_acc is None:
        raise TypeError("assert_robust needs a baseline, a min_robust_acc, or both")
    failures = []
    outcome = None
    if baseline is not None:
        outcome = compare(os.fspath(baseline), os.fspath(results), tolerance, alpha, strict, allow_seed_change,
                          allow_model_change, fail_on_flags)
        if not outcome.ok:
            failures.append(text(outcome))
    if min_robust_acc is not None:
        floors = min_robust_acc if isinstance(min_robust_acc, dict) else {"worst-case": float(min_robust_acc)}
        rows = read_table(os.fspath(results), "results").rows
        unknown = sorted(set(floors) - {r["attack"] for r in rows})
        if unknown:
            raise AssertionError(f"min_robust_acc names attacks the results do not have: {', '.join(unknown)}")
        low = [f"{label(r)}: robust_acc {r['robust_acc']} < {floors[r['attack']]:g}" for r in rows
               if r["attack"] in floors and float(r["robust_acc"]) < floors[r["attack"]]]
        if low:
            failures.append("robust accuracy below its floor:\n" + "\n".join(low))
    if failures:
        raise AssertionError("robustness fell:\n" + "\n\n".join(failures))
    return outcome
