"""The figures drawn from a run's samples.csv: the distances of the adaptive attacks' points to x_o (preemptive
paper, Figure 3) and a detector's scores, clean vs adversarial (``harness.figures.run_figures`` calls them)."""
from __future__ import annotations

import math
from pathlib import Path

from .common import NORM_TEXT, known, num

POINT_LABELS = {"rec": "reconstruction $\\hat{x}_o$", "adv": "adversarial $\\hat{x}_o^a$"}  # the *_dist points


class Samples:
    """A run's samples.csv rows, built on first use; ``keys``: the per-sample extras the cells have (the columns
    beyond the fixed ones), which say whether a figure needs the rows at all."""

    def __init__(self, keys, build):
        self.keys, self._build, self._rows = set(keys), build, None

    def __call__(self):
        if self._rows is None:
            self._rows = self._build()
        return self._rows


def _cells(srows: list[dict]) -> dict:
    cells: dict = {}
    for s in srows:
        cells.setdefault((s["defense"], s["attack"], s["eps"]), []).append(s)
    return cells


def distances(srows, norms: dict, stem: Path, title: str) -> bool:
    """Histograms of each ``<point>_dist`` column per (defense, attack, eps) cell, over the attacked samples."""
    panels = []
    for (d, a, e), ss in _cells(srows).items():
        attacked = [s for s in ss if str(s.get("attacked")) == "1"]
        cols = sorted((k for k in ss[0] if k.endswith("_dist") and any(s.get(k, "") != "" for s in attacked)),
                      key=lambda k: (k != "rec_dist", k))
        if not cols:
            continue
        eps = num(e)
        series = []
        for col in cols:
            vals = [v for v in (num(s[col]) for s in attacked) if known(v)]
            if not vals:
                continue
            name = col[:-5]
            out = sum(v > eps * (1 + 1e-4) + 1e-6 for v in vals) / len(vals) if known(eps) else math.nan
            label = POINT_LABELS.get(name, name)
            series.append((label + (f": {100 * out:.0f}% > $\\epsilon$" if known(out) else ""), vals))
        if series:
            norm = NORM_TEXT.get(norms.get((d, a, e), ""), "")
            marks = [(f"$\\epsilon$ = {eps:g}", eps, None)] if known(eps) else []
            panels.append((f"{d} vs {a} ({norm} $\\epsilon$ = {e}, {len(attacked)} samples)", series, marks))
    if not panels:
        return False
    from .plots import histograms

    histograms(panels, stem, title=f"{title}: distance to the original image $x_o$", xlabel="$\\|x - x_o\\|$")
    return True


def _threshold(defense: str, run_info: dict | None):
    """The detector's threshold where run.json's config gives it (``threshold`` set, not calibrated), else None."""
    for d in ((run_info or {}).get("config") or {}).get("defenses") or []:
        if d.get("name") == defense and isinstance(d.get("threshold"), (int, float)) and not isinstance(d.get("threshold"), bool):
            return float(d["threshold"])
    return None


def scores(srows, rows, run_info, stem: Path, title: str) -> bool:
    """Score histograms (clean input vs its adversarial image) of each detector cell, over the attacked samples.

    The threshold: the configured one if run.json has it; else, where the rejections are consistent with one
    (every rejected adversarial image scores below every accepted one), the interval they leave for it, hatched."""
    auroc = {(r["defense"], r["attack"], r["eps"]): r.get("det_auroc", "") for r in rows}
    panels = []
    for (d, a, e), ss in _cells(srows).items():
        if "score_clean" not in ss[0]:
            continue
        pairs = [(num(s.get("score_clean")), num(s.get("score_adv")), num(s.get("rejected"))) for s in ss
                 if str(s.get("attacked")) == "1"]
        clean = [c for c, _, _ in pairs if known(c) and math.isfinite(c)]
        adv = [v for _, v, _ in pairs if known(v) and math.isfinite(v)]
        if not (clean or adv):
            continue
        marks = []
        tau = _threshold(d, run_info)
        if tau is not None:
            marks.append((f"threshold {tau:g}", tau, None))
        else:
            rej = [v for _, v, r in pairs if r == 1 and known(v) and math.isfinite(v)]
            acc = [v for _, v, r in pairs if r == 0 and known(v) and math.isfinite(v)]
            if rej and acc and max(rej) < min(acc):
                marks.append(("threshold: in this interval\n(inferred from the rejections)", max(rej), min(acc)))
        au = auroc.get((d, a, e), "")
        series = [(f"clean ({len(clean)})", clean), (f"adversarial ({len(adv)})", adv)]
        panels.append((f"{d} vs {a} ($\\epsilon$ = {e})" + (f", AUROC {au}%" if au else ""),
                       [s for s in series if s[1]], marks))
    if not panels:
        return False
    from .plots import histograms

    histograms(panels, stem, title=f"{title}: detector scores of the attacked samples (an input scoring below the "
               "threshold is rejected)", xlabel="detector score", lo=None)
    return True
