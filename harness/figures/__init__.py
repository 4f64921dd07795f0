"""Figures of runs, grids and certificates (matplotlib, Agg; PNG at 150 dpi and PDF), linked from the Markdown.

A figure is drawn only when there is something to draw, so most runs import no matplotlib and write nothing more:

| figure (under ``figures/``) | when | what |
|---|---|---|
| ``robust_vs_eps`` | a run or grid with >= 2 budgets | robust accuracy vs eps with its 95% interval as a band: a run has a panel per defense and a line per attack (the worst case wide and grey beneath them, the clean accuracy dashed), a grid a panel per attack (worst case first) and a line per cell |
| ``distances`` | samples with ``*_dist`` points (the adaptive attacks' ``rec_dist``, ``adv_dist``) | histograms of ||x_hat_o - x_o|| and ||x_hat_o^a - x_o|| with eps dotted (preemptive paper, Figure 3) |
| ``detector_scores`` | samples with ``score_clean`` / ``score_adv`` (detectors) | score histograms of the clean inputs and their adversarial images, with the threshold where the run says it |
| ``certified_vs_radius`` | ``harness certify`` | certified accuracy vs L2 radius, the table's radii with intervals, the budget's radius dotted |
| ``images`` | ``python -m harness.figures images ...`` | x_o / x_r / x_adv / abs(x_r - x_o) of the first images (Figure 6 style; ``harness.figures.images``) |

The folder is ``figures/`` inside the run's (grid's, certify's) folder, not its top: a grid's Ray tasks hand back
the top-level files of a cell as text, so the cells' figures stay out of that (the grid's own figures are drawn
from the combined rows on the driver).  Figures never change results.csv.  A figure a run folder held from an
earlier run and this run does not draw is removed, so the folder shows only this run's figures.
"""
from __future__ import annotations

from pathlib import Path

from harness.display import display

from .common import NORM_TEXT, known, num
from .samples import Samples, distances, scores

FOLDER = "figures"
SELF_NAMED = ("defense", "model", "dataset", "norm")  # axes whose value names itself in a legend
RUN_FIGURES = ("robust_vs_eps", "distances", "detector_scores")
CAPTIONS = {"robust_vs_eps": "Robust accuracy vs eps (95% intervals shaded)",
            "distances": "Distances to x_o of the reconstruction and of the adversarial images (eps dotted)",
            "detector_scores": "Detector scores: clean inputs vs their adversarial images",
            "certified_vs_radius": "Certified accuracy vs L2 radius"}


def image_grid(x_o, x_r, x_adv, path, **kw) -> list[Path]:
    """x_o / x_r / x_adv / |x_r - x_o| of a few images (``harness.figures.plots.image_grid``)."""
    from .plots import image_grid as draw

    return draw(x_o, x_r, x_adv, path, **kw)


def markdown(names: list[str], heading: str = "## Figures", captions: dict | None = None) -> str:
    """The results.md section linking ``names`` (stems under figures/), each with its caption line (``captions``
    overrides ``CAPTIONS``); empty when there is none."""
    if not names:
        return ""
    lines = ["", heading, ""]
    for name in names:
        short = CAPTIONS.get(name, name)
        lines += [f"![{short}]({FOLDER}/{name}.png)", "",
                  f"*Figure: {(captions or {}).get(name, short)}* ([PDF]({FOLDER}/{name}.pdf)).", ""]
    return "\n".join(lines)


def _tidy(folder: Path, owned, drawn) -> None:
    """Remove the figures of ``owned`` that this run did not draw (left by an earlier run in the same folder)."""
    if not folder.is_dir():
        return
    for name in owned:
        if name not in drawn:
            for ext in ("png", "pdf"):
                (folder / f"{name}.{ext}").unlink(missing_ok=True)
    try:
        folder.rmdir()  # only when empty
    except OSError:
        pass


def _curves(rows: list[dict], panel_of, line_of) -> tuple[dict, bool]:
    """{panel: {line: [(eps, acc, lo, hi)]}} from results.csv rows; and whether some line has >= 2 budgets.  A
    panel none of whose lines has two budgets (nothing to draw against eps) is left out: no empty panels."""
    panels: dict = {}
    for r in rows:
        eps, acc = num(r.get("eps")), num(r.get("robust_acc"))
        if not (known(eps) and known(acc)):
            continue
        key = panel_of(r)
        if key is None:
            continue
        lo, hi = num(r.get("robust_ci_low")), num(r.get("robust_ci_high"))
        panels.setdefault(key, {}).setdefault(line_of(r), []).append((eps, acc, lo if known(lo) else acc, hi if known(hi) else acc))
    panels = {k: lines for k, lines in panels.items() if any(len({p[0] for p in pts}) >= 2 for pts in lines.values())}
    return panels, bool(panels)


def _norm_of(rows) -> str:
    norms = sorted({r.get("norm", "") for r in rows if r.get("norm") in NORM_TEXT})
    return ", ".join(NORM_TEXT[n] for n in norms)


def _same(rows, key) -> str | None:
    """The value of ``key`` common to every row, else None."""
    values = list(dict.fromkeys(str(r.get(key, "")) for r in rows))
    return values[0] if len(values) == 1 else None


def run_figures(out: Path, rows: list[dict], samples, meta: dict, run_info: dict | None = None) -> str:
    """Draw a run's figures into ``out``/figures from its results.csv rows and its samples.csv rows (``samples``: the
    rows, or a ``Samples`` that builds them only when a figure needs them); returns the results.md section ('' if
    none).  ``run_info``: run.json's content (a detector's configured threshold)."""
    drawn = []
    folder = Path(out) / FOLDER
    title = f"{meta.get('dataset', '')} / {meta.get('model', '')}"
    norm = _norm_of(rows)
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"] != "worst-case"))
    from .plots import WORST

    one_attack = len(attacks) == 1
    panels, several = _curves(rows, lambda r: r["defense"] if not (one_attack and r["attack"] == "worst-case") else None,
                              lambda r: WORST if r["attack"] == "worst-case" else f"{display(r['attack'])} ({r['threat']})")
    if several:
        from .plots import robust_vs_eps

        clean: dict = {}
        for r in rows:
            if r["attack"] == "worst-case" and known(num(r.get("eps"))) and known(num(r.get("clean_acc"))):
                clean.setdefault(r["defense"], []).append((num(r["eps"]), num(r["clean_acc"])))
        robust_vs_eps([(display(d), list(lines.items()), clean.get(d)) for d, lines in panels.items()],
                      folder / "robust_vs_eps",
                      title=f"{title}: robust accuracy vs budget ({norm})", xlabel=f"eps ({norm})")
        drawn.append("robust_vs_eps")
    srows = samples
    if isinstance(samples, Samples):
        srows = samples() if any(k.endswith("_dist") or k.startswith("score_") for k in samples.keys) else None
    if srows:
        norms = {(r["defense"], r["attack"], r["eps"]): r["norm"] for r in rows}
        if distances(srows, norms, folder / "distances", title):
            drawn.append("distances")
        if scores(srows, rows, run_info, folder / "detector_scores", title):
            drawn.append("detector_scores")
    _tidy(folder, RUN_FIGURES, drawn)
    n = rows[0].get("n", "") if rows else ""
    return markdown(drawn, captions={"robust_vs_eps": (
        f"Robust accuracy (%) vs eps ({norm}), {title}: a panel per defense, a line per attack, the worst case per "
        f"sample wide and grey, the clean accuracy dashed; shaded: exact 95% Clopper-Pearson intervals; n = {n}.")})


def grid_figures(out: Path, rows: list[dict], labels: dict[str, dict], varying: list[str], name: str,
                 names: dict | None = None) -> str:
    """The grid's robust-vs-eps figure from its combined rows: a panel per attack (and norm, where the grid has
    several), the worst case first, a line per cell labelled by the axes that vary, in display names
    (``harness.display``; ``names``: the grid's ``[labels]``); returns the results.md section with its caption."""
    from .plots import WORST

    folder = Path(out) / FOLDER
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"] != "worst-case"))
    norms = sorted({r.get("norm", "") for r in rows if r.get("norm") in NORM_TEXT})

    def panel(r):
        if r["attack"] == "worst-case":
            head = WORST if len(attacks) > 1 else f"{display(attacks[0], names)} ({r['threat']})" if attacks else WORST
        elif len(attacks) > 1:
            head = f"{display(r['attack'], names)} ({r['threat']})"
        else:
            return None
        return f"{head}, {NORM_TEXT[r['norm']]}" if len(norms) > 1 and r.get("norm") in NORM_TEXT else head

    def line(r):
        lab = labels.get(r.get("cell"), {})
        parts = [display(lab[a], names) if a in SELF_NAMED else f"{display(a.removeprefix('set.'), names)} = {lab[a]}"
                 for a in varying if lab.get(a, "") != ""]
        return ", ".join(parts) or display(r["defense"], names)

    panels, several = _curves(rows, panel, line)
    drawn = []
    if several:
        from .plots import robust_vs_eps

        order = sorted(panels, key=lambda p: not p.startswith(WORST))
        what = " / ".join(v for v in (_same(rows, "dataset"), _same(rows, "model")) if v is not None)
        what = f" ({what})" if what else ""
        norm = _norm_of(rows)
        robust_vs_eps([(p, list(panels[p].items()), None) for p in order], folder / "robust_vs_eps",
                      title=f"grid {name}{what}: robust accuracy vs budget",
                      xlabel=f"eps ({norm})")
        drawn.append("robust_vs_eps")
    _tidy(folder, ("robust_vs_eps",), drawn)
    ns = "/".join(sorted({r["n"] for r in rows if r.get("n")}, key=int))
    axes = ", ".join(display(a.removeprefix("set."), names) for a in varying) or "defense"
    caption = (f"Robust accuracy (%) vs eps ({_norm_of(rows)}), grid {name}: a panel per attack"
               f"{' (worst case per sample over the attacks first)' if len(attacks) > 1 else ''}, a line per cell "
               f"({axes}); shaded: exact 95% Clopper-Pearson intervals; {ns} samples per cell.")
    return markdown(drawn, captions={"robust_vs_eps": caption})


def certify_figures(out: Path, curve_csv: str, table_csv: str, meta: dict) -> str:
    """``harness certify``'s figure from the text of its certified_curve.csv and certified.csv (``meta``: its
    dataset, model, defense, sigma, n); returns the certified.md section."""
    import csv
    import io

    curve, table = (list(csv.DictReader(io.StringIO(text))) for text in (curve_csv, table_csv))
    pts = [(num(c["radius"]), num(c["certified_acc"])) for c in curve]
    pts = [p for p in pts if known(p[0]) and known(p[1])]
    if not pts:
        return ""
    points, eps = [], None
    for r in table:
        rad = num(r.get("radius"))
        if str(r.get("radius_label", "")).startswith("eps"):
            eps = (f"budget: {r['radius_label']}", rad)
        else:
            points.append((r.get("radius_label", ""), rad, num(r["certified_acc"]), num(r["ci_low"]), num(r["ci_high"])))
    from .plots import certified_curve

    n_img = table[0].get("images", "") if table else ""
    certified_curve([p[0] for p in pts], [p[1] for p in pts], points, Path(out) / FOLDER / "certified_vs_radius",
                    title=f"{meta.get('dataset')} / {meta.get('model')}: {meta.get('defense')}, $\\sigma$ = {meta.get('sigma')}, "
                          f"CERTIFY n = {meta.get('n')}, {n_img} images", eps=eps)
    return markdown(["certified_vs_radius"])
