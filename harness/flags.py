"""Gradient-masking checks on a run's rows (Carlini et al. 2019, "On evaluating adversarial robustness", sec. 5;
Athalye et al. 2018, "Obfuscated gradients give a false sense of security", sec. 3; Tramer et al. 2020, "On
adaptive attacks to adversarial example defenses"): signs that an evaluation's gradients were obfuscated, so its
robust accuracy is an over-estimate.  A flag lands on the row whose number is suspect.

Within one (dataset, model, defense, threat, norm):

- ``gradient-free-stronger``: a gradient attack (iterative or single-step) leaves more samples robust than a
  gradient-free one (Square) at the same eps.  A white-box gradient attack should be at least as strong.
- ``single-step-stronger``: a single-step attack (FGSM) leaves fewer samples robust than an iterative one at the
  same eps (the iterative attack includes the single step as its first iterate).
- ``not-monotone-in-eps``: an attack's robust accuracy rises with eps (a larger ball contains the smaller one).
- ``robust-at-unbounded-eps``: robust accuracy above 0 at an Linf eps >= 1, where any image is reachable.
- ``bpda-eot-stronger``: BPDA (backward pass replaced by an approximation) or EOT (gradient of the expectation
  over the defense's randomness) leaves significantly fewer samples robust than a plain iterative gradient attack
  at the same eps, and at most ``FAR`` = 3/4 of them: the defense's own gradients are what stops the plain attack
  (Athalye et al. 2018, sec. 4).

Across the threat models of one (dataset, model, defense, norm):

- ``transfer-stronger``: an oblivious attack (crafted on the undefended classifier, then passed through the
  defense) leaves significantly fewer samples robust than a white-box attack at the same eps, and at most ``FAR``
  of them: the adaptive attack
  should see at least what the transfer attack sees (Carlini et al. 2019, sec. 5.2; Tramer et al. 2020, sec. 3).

Across the series of one (dataset, model, norm):

- ``flat-in-eps``: a gradient attack's robust accuracy hardly falls from its smallest eps e0 to a larger eps e (it
  keeps ``FLAT_KEEP`` = 80% of it), over a range where another series of the same results (the undefended model
  under the same attack, or another attack on the defense) collapses: it falls significantly, to at most
  ``REFERENCE_FALL`` = a quarter of its accuracy at e0 (so e is a large budget, not a small one where a robust model
  is rightly flat), and the flat series stays significantly above it at e: the ball grew and the attack found
  little more (Athalye et al. 2018, sec. 3.1).

A difference counts when it exceeds ``TOLERANCE`` points (random restarts and draws move accuracies a little);
the three new checks also ask that it is significant (``harness.significance``: the two Clopper-Pearson intervals
at ``ALPHA``); the unbounded check has no tolerance.  ``gradients`` maps each attack label to what it asks of the
model (``Attack.gradients``: "iterative", "single-step", "gradient-free", "approximated" for BPDA, "expectation"
for EOT); attacks it does not name (and certifiers) are left out.
"""
from __future__ import annotations

from collections import defaultdict

from .significance import ALPHA, count, fell_unpaired

TOLERANCE = 1.0  # points of accuracy, as the regression gate's default
UNBOUNDED_LINF = 1.0
ITERATIVE = ("iterative", "approximated", "expectation")  # BPDA and EOT wrap an iterative attack (pgd by default)
PLAIN = ("iterative", "single-step")  # gradient attacks that use the defense's own gradients
THROUGH = ("approximated", "expectation")  # BPDA, EOT
FLAT_KEEP = 0.8  # flat-in-eps: a series that keeps this share of its accuracy at the smallest eps is flat ...
FAR = 0.75  # bpda-eot-stronger, transfer-stronger: the stronger attack leaves at most this share of the other's
REFERENCE_FALL = 0.25  # flat-in-eps: the falling series keeps at most this share of its accuracy at the smallest eps
FLAGS = ("gradient-free-stronger", "single-step-stronger", "not-monotone-in-eps", "robust-at-unbounded-eps",
         "bpda-eot-stronger", "transfer-stronger", "flat-in-eps")


def _acc(row: dict) -> float | None:
    try:
        return float(row["robust_acc"])
    except (KeyError, ValueError):
        return None


def _k(row: dict) -> tuple[int, int]:
    n = int(row.get("n") or 0)
    return count(_acc(row), n), n


def _far_fewer(lo: dict, hi: dict) -> bool:
    """``lo`` leaves significantly fewer samples robust than ``hi``, and at most ``FAR`` of them: far stronger, not
    a few more steps' worth (at a large n, PGD-40 is significantly, but not far, stronger than PGD-20)."""
    return _fewer(lo, hi) and _acc(lo) <= _acc(hi) * FAR


def _fewer(lo: dict, hi: dict) -> bool:
    """``lo`` leaves more than TOLERANCE points and significantly fewer samples robust than ``hi``."""
    if _acc(hi) - _acc(lo) <= TOLERANCE:
        return False
    (k_lo, n_lo), (k_hi, n_hi) = _k(lo), _k(hi)
    return n_lo > 0 and n_hi > 0 and fell_unpaired(k_hi, n_hi, k_lo, n_lo, ALPHA)


def masking_flags(rows: list[dict], gradients: dict[str, str]) -> list[list[str]]:
    """Per row of ``rows`` (result rows as ``harness.report.result_rows`` makes them): the checks that fired on it,
    each as ``name: reason``."""
    flags: list[list[str]] = [[] for _ in rows]
    kept = [i for i, r in enumerate(rows) if r.get("attack") in gradients and _acc(r) is not None]
    kind = {i: gradients[rows[i]["attack"]] for i in kept}
    group = defaultdict(list)  # (dataset, model, defense, threat, norm) -> row indices
    for i in kept:
        r = rows[i]
        group[r["dataset"], r["model"], r["defense"], r["threat"], r["norm"]].append(i)
    for idx in group.values():
        _within(rows, idx, kind, flags)
    _transfer(rows, kept, flags)
    _flat(rows, [i for i in kept if kind[i] in PLAIN + THROUGH], kept, flags)
    return flags


def _within(rows, idx, kind, flags) -> None:
    by_eps = defaultdict(list)
    for i in idx:
        by_eps[float(rows[i]["eps"])].append(i)
    for eps, cell in by_eps.items():
        free = [i for i in cell if kind[i] == "gradient-free"]
        single = [i for i in cell if kind[i] == "single-step"]
        iterative = [i for i in cell if kind[i] in ITERATIVE]
        for i in single + iterative:
            for j in free:
                if _acc(rows[i]) > _acc(rows[j]) + TOLERANCE:
                    flags[i].append(f"gradient-free-stronger: {rows[j]['attack']} leaves {rows[j]['robust_acc']}% "
                                    f"robust at eps {rows[i]['eps']}, this gradient attack {rows[i]['robust_acc']}%")
        for i in iterative:
            for j in single:
                if _acc(rows[i]) > _acc(rows[j]) + TOLERANCE:
                    flags[i].append(f"single-step-stronger: {rows[j]['attack']} leaves {rows[j]['robust_acc']}% "
                                    f"robust at eps {rows[i]['eps']}, this iterative attack {rows[i]['robust_acc']}%")
        for i in [i for i in cell if kind[i] == "iterative"]:  # FGSM is weaker than an iterative BPDA anyway
            for j in [j for j in cell if kind[j] in THROUGH]:
                if _far_fewer(rows[j], rows[i]):
                    flags[i].append(f"bpda-eot-stronger: {rows[j]['attack']} leaves {rows[j]['robust_acc']}% robust "
                                    f"at eps {rows[i]['eps']}, this plain gradient attack {rows[i]['robust_acc']}%")
        if rows[cell[0]]["norm"] == "linf" and eps >= UNBOUNDED_LINF:
            for i in cell:
                if _acc(rows[i]) > 0:
                    flags[i].append(f"robust-at-unbounded-eps: {rows[i]['robust_acc']}% robust at Linf eps "
                                    f"{rows[i]['eps']}, where every image is reachable")
    by_attack = defaultdict(list)
    for i in idx:
        by_attack[rows[i]["attack"]].append(i)
    for cells in by_attack.values():
        cells = sorted(cells, key=lambda i: float(rows[i]["eps"]))
        for lo, hi in zip(cells, cells[1:]):
            if _acc(rows[hi]) > _acc(rows[lo]) + TOLERANCE:
                flags[hi].append(f"not-monotone-in-eps: {rows[hi]['robust_acc']}% robust at eps {rows[hi]['eps']}, "
                                 f"{rows[lo]['robust_acc']}% at the smaller eps {rows[lo]['eps']}")


def _transfer(rows, kept, flags) -> None:
    cells = defaultdict(list)  # (dataset, model, defense, norm, eps) -> indices
    for i in kept:
        r = rows[i]
        cells[r["dataset"], r["model"], r["defense"], r["norm"], float(r["eps"])].append(i)
    for cell in cells.values():
        for i in [i for i in cell if rows[i]["threat"] == "white-box"]:
            for j in [j for j in cell if rows[j]["threat"] == "oblivious"]:
                if _far_fewer(rows[j], rows[i]):
                    flags[i].append(f"transfer-stronger: the oblivious {rows[j]['attack']} (crafted on the undefended "
                                    f"model) leaves {rows[j]['robust_acc']}% robust at eps {rows[i]['eps']}, this "
                                    f"white-box attack {rows[i]['robust_acc']}%")


def _series(rows, idx) -> dict[tuple, dict[float, int]]:
    out = defaultdict(dict)
    for i in idx:
        r = rows[i]
        out[r["dataset"], r["model"], r["norm"], r["defense"], r["threat"], r["attack"]][float(r["eps"])] = i
    return out


def _flat(rows, gradient_rows, kept, flags) -> None:
    suspects, references = _series(rows, gradient_rows), _series(rows, kept)
    for key, s in suspects.items():
        if len(s) < 2:
            continue
        e0 = min(s)
        for e in sorted(s)[1:]:
            lo, hi = rows[s[e0]], rows[s[e]]
            if _acc(hi) < _acc(lo) * FLAT_KEEP:
                continue  # it falls
            for rkey, ref in sorted(references.items(), key=lambda kv: kv[0][5] != key[5]):  # same attack first
                if rkey == key or rkey[:3] != key[:3] or e0 not in ref or e not in ref:
                    continue
                r0, r1 = rows[ref[e0]], rows[ref[e]]
                if _acc(r1) <= _acc(r0) * REFERENCE_FALL and _fewer(r1, r0) and _fewer(r1, hi):
                    flags[s[e]].append(
                        f"flat-in-eps: {hi['attack']} stays at {hi['robust_acc']}% from eps {lo['eps']} "
                        f"({lo['robust_acc']}%) to {hi['eps']}, while {r0['defense']} / {r0['attack']} "
                        f"({r0['threat']}) falls from {r0['robust_acc']}% to {r1['robust_acc']}%")
                    break


def warnings(rows: list[dict], flags: list[list[str]]) -> list[str]:
    """One line per flagged row, for results.md."""
    return [f"gradient masking? {r['defense']} / {r['attack']} (eps {r['eps']}): {f}"
            for r, fs in zip(rows, flags) for f in fs]
