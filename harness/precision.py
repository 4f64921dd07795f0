"""Mixed precision as a run option (``run --precision fp32|bf16|fp16``) and its fidelity check against fp32.

What runs in low precision: the forward and backward passes of ``defense.prepare`` and of ``attack.run``, under
``torch.autocast(device_type, dtype)`` (PyTorch's automatic mixed precision: matmuls and convolutions in the
low-precision dtype, reductions and losses in fp32).  What never does: the verdict.  The evaluator's clean
``defense.classify`` and the judge of the final images (``harness.threat.run_cell``) run outside autocast, in
fp32, on images cast back to fp32; the ``Referee`` an adaptive attack is handed judges in fp32 too.  Certifiers
(``Attack.certifies``: bound propagation) run in fp32 as well: a bound computed in low precision is not sound.

``fp16`` needs CUDA (CPU autocast in float16 is slow and poorly covered); ``bf16`` works on CPU and CUDA.

Fidelity check (``fidelity``): whenever the precision is not fp32, the same cells run again in fp32 on the first
``min(n, --fidelity-n)`` images (default ``FIDELITY_N`` = 100).  For each cell (and the clean and worst-case
rows) the low-precision robust accuracy on those images is compared with the fp32 one; where the fp32 value
lies outside the low-precision value's exact 95% interval (Clopper-Pearson, on the same images) a warning goes
to the top of results.md (``meta["warnings"]``), and every number goes to run.json (``fidelity``).  The two
evaluations of a sample need not draw the same random numbers (the per-batch seeds and draw shapes follow the
batch layout), so the check is statistical, not a per-sample equality; ``disagree`` counts the differing
verdicts all the same.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch

from harness.core.attack import NO_CONTEXT
from harness.core.errors import UsageError

from .metrics import accuracy

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FIDELITY_N = 100


def autocast_for(precision: str, device: torch.device):
    """A factory of context managers: ``torch.autocast`` in the precision's dtype, or a no-op for fp32.

    UsageError for an unknown name and for fp16 off CUDA."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision expects one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA device (this run is on {device.type}); use bf16 or fp32")
    return lambda: torch.autocast(device.type, dtype=dtype)


def full_precision(fn, device_type: str):
    """``fn`` run with autocast switched off (fp32), for the judge an attack calls from inside autocast."""
    def wrapped(*args, **kw):
        with torch.autocast(device_type, enabled=False):
            return fn(*args, **kw)
    return wrapped


class AutocastAttack:
    """An attack whose ``run`` happens under ``amp()``; everything else is the wrapped attack's own.

    The images it hands back are cast to the dtype of its input (fp32), and the referee of its context judges
    outside autocast, so that every verdict is an fp32 one."""

    def __init__(self, attack, amp, device_type: str):
        self._attack, self._amp, self._device_type = attack, amp, device_type

    def __getattr__(self, name):
        return getattr(self._attack, name)

    def run(self, model, x, y, budget, context=NO_CONTEXT):
        if context.referee is not None:
            ref = context.referee
            context = dataclasses.replace(context, referee=dataclasses.replace(
                ref, judge=full_precision(ref.judge, self._device_type)))
        with self._amp():
            result = self._attack.run(model, x, y, budget, context)

        def cast(t):
            return t.to(x.dtype) if torch.is_tensor(t) and t.is_floating_point() else t

        return dataclasses.replace(result, images=cast(result.images), candidates=[cast(c) for c in result.candidates],
                                   points={k: cast(v) for k, v in result.points.items()})


def under(amp, fn, *args, **kw):
    """``fn(*args, **kw)`` under ``amp()`` (None: as it is)."""
    with (amp() if amp is not None else contextlib.nullcontext()):
        return fn(*args, **kw)


def _masks(res, m: int):
    """(label, mask of the first m samples) for the clean row, each cell, and each budget's worst case."""
    out = [(("clean", None), res.clean[:m])]
    out += [((c.attack, c.budget if c.budget is not None else c.eps), c.verdict.robust[:m]) for c in res.cells]
    out += [(("worst-case", b), res.worst_case(b)[:m]) for b in res.budgets()]
    return out


def fidelity(low: list, ref: list, precision: str, m: int) -> tuple[dict, list[str]]:
    """Compare the low-precision results (first ``m`` samples) with an fp32 evaluation ``ref`` of those ``m``.

    Returns (the numbers for run.json, the warning lines for results.md)."""
    rows, warnings = [], []
    for res_low, res_ref in zip(low, ref):
        for (key, a), (_, b) in zip(_masks(res_low, m), _masks(res_ref, m)):
            lo_acc, ref_acc = accuracy(a), accuracy(b)
            outside = not lo_acc["ci_low"] <= ref_acc["acc"] <= lo_acc["ci_high"]
            rows.append({"defense": res_low.defense, "attack": key[0], "eps": key[1],
                         "acc_" + precision: round(lo_acc["acc"], 2), "acc_fp32": round(ref_acc["acc"], 2),
                         "ci_low": round(lo_acc["ci_low"], 2), "ci_high": round(lo_acc["ci_high"], 2),
                         "disagree": int((a != b).sum()), "outside_ci": outside})
            if outside:
                where = f"{res_low.defense} / {key[0]}" + (f" (eps {key[1]:.6g})" if key[1] is not None else "")
                warnings.append(f"--precision {precision}: {where} has {lo_acc['acc']:.2f}% on the first {m} images, "
                                f"fp32 {ref_acc['acc']:.2f}%, outside the 95% interval [{lo_acc['ci_low']:.2f}, "
                                f"{lo_acc['ci_high']:.2f}]; the {precision} numbers may be wrong (run.json: fidelity)")
    return {"precision": precision, "n": m, "rows": rows}, warnings


def fidelity_check(results: list, rerun, precision: str, n: int, fidelity_n: int) -> tuple[dict | None, list[str]]:
    """The fidelity check of a low-precision run: ``rerun(m)`` evaluates the first ``m = min(n, fidelity_n)``
    images in fp32.  (None, []) for an fp32 run; ``fidelity_n == 0`` skips the check, with a warning saying so."""
    if precision == "fp32":
        return None, []
    if fidelity_n == 0:
        return None, [f"--precision {precision} without a fidelity check (--fidelity-n 0): no fp32 comparison was made"]
    m = min(n, fidelity_n)
    return fidelity(results, rerun(m), precision, m)
