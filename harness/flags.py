"""Gradient-masking checks on a run's rows (Carlini et al. 2019, "On evaluating adversarial robustness", sec. 5;
Athalye et al. 2018, sec. 3): signs that an evaluation's gradients were obfuscated, so its robust accuracy is an
over-estimate.  Each check compares robust accuracies of rows of one (dataset, model, defense, threat, norm):

- ``gradient-free-stronger``: a gradient attack (iterative or single-step) leaves more samples robust than a
  gradient-free one (Square) at the same eps.  A white-box gradient attack should be at least as strong.
- ``single-step-stronger``: a single-step attack (FGSM) leaves fewer samples robust than an iterative one at the
  same eps (the iterative attack includes the single step as its first iterate).
- ``not-monotone-in-eps``: an attack's robust accuracy rises with eps (a larger ball contains the smaller one).
- ``robust-at-unbounded-eps``: robust accuracy above 0 at an Linf eps >= 1, where any image is reachable.

A difference counts when it exceeds ``TOLERANCE`` points (random restarts and draws move accuracies a little);
the unbounded check has no tolerance.  ``gradients`` maps each attack name to what it asks of the model
(``Attack.gradients``); attacks it does not name (and certifiers) are left out.
"""
from __future__ import annotations

from collections import defaultdict

TOLERANCE = 1.0  # points of accuracy, as the regression gate's default
UNBOUNDED_LINF = 1.0


def _acc(row: dict) -> float | None:
    try:
        return float(row["robust_acc"])
    except (KeyError, ValueError):
        return None


def masking_flags(rows: list[dict], gradients: dict[str, str]) -> list[list[str]]:
    """Per row of ``rows`` (result rows as ``harness.report.result_rows`` makes them): the checks that fired on it,
    each as ``name: reason``; a flag lands on the row whose number is suspect."""
    flags: list[list[str]] = [[] for _ in rows]
    group = defaultdict(list)  # (dataset, model, defense, threat, norm) -> row indices
    for i, r in enumerate(rows):
        if r.get("attack") in gradients and _acc(r) is not None:
            group[r["dataset"], r["model"], r["defense"], r["threat"], r["norm"]].append(i)
    for idx in group.values():
        by_eps = defaultdict(list)
        for i in idx:
            by_eps[float(rows[i]["eps"])].append(i)
        for eps, cell in by_eps.items():
            free = [i for i in cell if gradients[rows[i]["attack"]] == "gradient-free"]
            single = [i for i in cell if gradients[rows[i]["attack"]] == "single-step"]
            iterative = [i for i in cell if gradients[rows[i]["attack"]] == "iterative"]
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
    return flags


def warnings(rows: list[dict], flags: list[list[str]]) -> list[str]:
    """One line per flagged row, for results.md."""
    return [f"gradient masking? {r['defense']} / {r['attack']} (eps {r['eps']}): {f}"
            for r, fs in zip(rows, flags) for f in fs]
