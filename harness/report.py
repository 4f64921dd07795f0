"""Run reports: results.csv / results.md / timings.csv / samples.csv / run.json, written atomically.

results.csv columns (docs/CONTRACTS.md, in this order):
  dataset, model, defense, attack, threat, norm, eps, n, clean_acc, robust_acc, robust_ci_low,
  robust_ci_high, seed, config_hash
then: clean_ci_low, clean_ci_high, attacked, invalid (attacked samples whose every misclassifying image lay
outside the budget of the original image; on a worst-case row, the samples robust over all attacks that some
attack fooled only so), mean_dist, max_dist, robust_acc_majority;
and, only when a defense of the run is a detector (``DETECTOR_COLUMNS``): robust_acc_reject_defended (a rejected
adversarial image counts as defended; ``robust_acc`` counts it as not defended), rejected (attacked samples whose
adversarial image was rejected) and det_auroc (AUROC in percent of the detector score, clean inputs vs their
adversarial images, over the attacked samples; in-distribution/clean positive); and, only when a certifier ran
(``CERTIFIED_COLUMNS``): certified_acc with its interval on the certifier's rows (robust_acc there is the same
number: a lower bound on robustness, left out of the worst case).
Accuracies in percent with two decimals; one row per (defense, attack) and one ``worst-case`` row per defense.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from tabulate import tabulate

from .engine import DefenseResult
from .flags import masking_flags, warnings
from .metrics import accuracy, norm_summary

COLUMNS = ["dataset", "model", "defense", "attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc",
           "robust_ci_low", "robust_ci_high", "seed", "config_hash"]
EXTRA_COLUMNS = ["clean_ci_low", "clean_ci_high", "attacked", "invalid", "mean_dist", "max_dist", "robust_acc_majority",
                 "model_sha256", "data_fingerprint", "subset"]
IDENTITY = ("model_sha256", "data_fingerprint", "subset")  # what the numbers rest on (harness.build), on every row
DETECTOR_COLUMNS = ["robust_acc_reject_defended", "rejected", "det_auroc"]
CERTIFIED_COLUMNS = ["certified_acc", "certified_ci_low", "certified_ci_high"]
FLAG_COLUMNS = ["flags"]  # only when a gradient-masking check fired (harness.flags)
TIMING_COLUMNS = ["defense", "attack", "stage", "seconds", "images_per_s", "forward_per_sample", "backward_per_sample", "eps"]


def _f2(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _f4(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _same(values) -> str:
    values = sorted(set(values))
    return values[0] if len(values) == 1 else "mixed"


def result_rows(results: list[DefenseResult], *, dataset: str, model: str, seed: int, config_hash: str,
                identity: dict | None = None) -> list[dict]:
    rows = []
    for res in results:
        clean = accuracy(res.clean)
        base = {**(identity or {}), "dataset": dataset, "model": model, "defense": res.defense, "n": clean["n"],
                "clean_acc": _f2(clean["acc"]), "seed": seed, "config_hash": config_hash,
                "clean_ci_low": _f2(clean["ci_low"]), "clean_ci_high": _f2(clean["ci_high"])}
        for budget in res.budgets():
            rows += _cell_rows(res, [c for c in res.cells if c.budget == budget], base)
            rows.append(_worst_row(res, budget, base))
    return rows


def _cell_rows(res: DefenseResult, cells, base: dict) -> list[dict]:
    rows = []
    for cell in cells:
        v = cell.verdict
        rob = accuracy(v.robust)
        mean_d, max_d = norm_summary(v.dist, v.attacked)
        maj = v.extra.get("robust_majority")
        cert = accuracy(v.robust) if cell.certifies else None
        certified = {"certified_acc": _f2(cert["acc"]), "certified_ci_low": _f2(cert["ci_low"]),
                     "certified_ci_high": _f2(cert["ci_high"])} if cert else {}
        rows.append({**base, **_detector_cells(v), **certified, "attack": cell.attack, "threat": cell.threat, "norm": cell.norm,
                     "eps": f"{cell.eps:.6g}", "robust_acc": _f2(rob["acc"]), "robust_ci_low": _f2(rob["ci_low"]),
                     "robust_ci_high": _f2(rob["ci_high"]), "attacked": int(v.attacked.sum()),
                     "invalid": int((v.attacked & ~v.valid).sum()), "mean_dist": _f4(mean_d), "max_dist": _f4(max_d),
                     "robust_acc_majority": _f2(accuracy(maj)["acc"]) if maj is not None else ""})
    return rows


def _worst_row(res: DefenseResult, budget: float | None, base: dict) -> dict:
    """The ``worst-case`` row of one budget: over its attacks' cells (certifiers stay out)."""
    cells = [c for c in res.cells if not c.certifies and c.budget == budget]
    worst = accuracy(res.worst_case(budget))
    if any("robust_reject_defended" in c.verdict.extra for c in cells):
        both = res.clean.clone()
        for c in cells:
            both &= c.verdict.extra.get("robust_reject_defended", c.verdict.robust)
        base = {**base, "robust_acc_reject_defended": _f2(accuracy(both)["acc"])}
    return {**base, "attack": "worst-case", "threat": _same(c.threat for c in cells) if cells else "none",
            "norm": _same(c.norm for c in cells) if cells else "", "eps": _same(f"{c.eps:.6g}" for c in cells) if cells else "",
            "robust_acc": _f2(worst["acc"]), "robust_ci_low": _f2(worst["ci_low"]), "robust_ci_high": _f2(worst["ci_high"]),
            "attacked": "", "invalid": _saved_by_validity(res.worst_case(budget), cells),
            "mean_dist": "", "max_dist": "", "robust_acc_majority": ""}


def _saved_by_validity(robust, cells) -> int:
    """Samples robust in the worst case that some attack only fooled with invalid images (outside the budget of the
    original image): saved by the validity rule alone, each sample counted once."""
    saved = robust & False
    for c in cells:
        saved = saved | (c.verdict.attacked & ~c.verdict.valid)
    return int((saved & robust).sum())


def _detector_cells(v) -> dict:
    """The detector columns of one cell (empty for a cell of another defense kind)."""
    if "robust_reject_defended" not in v.extra:
        return {}
    from .ood_metrics import auroc

    att = v.attacked
    s_in, s_adv = v.extra["score_clean"][att], v.extra["score_adv"][att]
    ok = s_in.isfinite() & s_adv.isfinite()
    return {"robust_acc_reject_defended": _f2(accuracy(v.extra["robust_reject_defended"])["acc"]),
            "rejected": int((v.extra["rejected"][att] == 1).sum()),
            "det_auroc": _f2(100 * auroc(s_in[ok], s_adv[ok])) if ok.any() else ""}


def timing_rows(results: list[DefenseResult]) -> list[dict]:
    rows = []
    for res in results:
        n = max(len(res.clean), 1)
        stages = [("(prepare)", "defense", res.prepare_seconds, res.prepare_forwards, res.prepare_backwards, "")]
        stages += [(c.attack, "attack", c.seconds, c.forwards, c.backwards, f"{c.eps:.6g}") for c in res.cells]
        for attack, stage, secs, fw, bw, eps in stages:
            rows.append({"defense": res.defense, "attack": attack, "stage": stage, "seconds": f"{secs:.3f}",
                         "images_per_s": f"{n / secs:.1f}" if secs > 0 else "", "forward_per_sample": f"{fw / n:.2f}",
                         "backward_per_sample": f"{bw / n:.2f}", "eps": eps})
    return rows


def sample_rows(results: list[DefenseResult], labels) -> list[dict]:
    keys = sorted({k for r in results for c in r.cells for k in c.verdict.extra if k != "robust_majority"})
    rows = []
    for res in results:
        for c in res.cells:
            v = c.verdict
            for i in range(len(v.robust)):
                row = {"index": i, "label": int(labels[i]), "defense": res.defense, "attack": c.attack,
                       "eps": f"{c.eps:.6g}", "clean": int(v.clean[i]), "robust": int(v.robust[i]), "attacked": int(v.attacked[i]),
                       "valid": int(v.valid[i]), "dist": _f4(float(v.dist[i]))}
                for k in keys:
                    row[k] = _f4(float(v.extra[k][i])) if k in v.extra else ""
                rows.append(row)
    return rows


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_markdown(rows: list[dict], meta: dict) -> str:
    """A paper-style table (defense x attack, robust accuracy), then every row in full."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"] != "worst-case"))
    # One line per (defense, budget): a worst-case row closes each; its eps is "mixed" where --set gave an attack
    # its own budget.  With several budgets the table gets an eps column.
    lines_of = [(r["defense"], r["eps"]) for r in rows if r["attack"] == "worst-case"]
    several = len({e for _, e in lines_of}) > 1
    by, start = {}, 0
    for i, r in enumerate(rows):
        if r["attack"] == "worst-case":
            by.update({(r["defense"], r["eps"], c["attack"]): c for c in rows[start:i + 1]})
            start = i + 1
    threat = {a: next(by[k]["threat"] for k in by if k[2] == a) for a in attacks}
    head = ["Defense"] + (["eps"] if several else []) + ["Clean"] + [f"{a} ({threat[a]})" for a in attacks] + ["Worst case"]
    body = [[d] + ([e] if several else []) + [by[d, e, "worst-case"]["clean_acc"]] +
            [by[d, e, a]["robust_acc"] if (d, e, a) in by else "" for a in attacks] + [by[d, e, "worst-case"]["robust_acc"]]
            for d, e in lines_of]
    full_cols = ["defense", "attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc", "robust_ci_low",
                 "robust_ci_high", "invalid", "mean_dist"]
    lines = [f"# Robustness: {meta['dataset']} / {meta['model']}", "",
             f"Accuracy in percent on {rows[0]['n']} samples ({meta['note']}); seed {meta['seed']}, "
             f"config {meta['config_hash']}. Robust accuracy is the worst case per sample over the attacks; "
             "an adversarial image outside the budget of the original image counts as defended (column invalid).", "",
             *[f"- **Warning:** {w}" for w in meta.get("warnings", [])], *([""] if meta.get("warnings") else []),
             tabulate(body, headers=head, tablefmt="github", disable_numparse=True), "", "## All cells", "",
             tabulate([[r[c] for c in full_cols] for r in rows], headers=full_cols, tablefmt="github", disable_numparse=True), ""]
    det = [r for r in rows if r.get("robust_acc_reject_defended", "") != ""]
    if det:  # detectors: both readings of a rejection, and the detection numbers
        cols = ["defense", "attack", "clean_acc", "robust_acc", "robust_acc_reject_defended", "rejected", "attacked", "det_auroc"]
        lines += ["## Detectors", "",
                  "A detector rejects an input (prediction -1) whose score is below its threshold, set on clean calibration "
                  "images (see the defense's parameters in run.json). robust_acc counts a rejected adversarial image as NOT defended; "
                  "robust_acc_reject_defended counts it as defended. A rejected clean image is an error in both. "
                  "det_auroc: AUROC (%) of the score, clean inputs (positive) vs their adversarial images.", "",
                  tabulate([[r.get(c, "") for c in cols] for r in det], headers=cols, tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)


def environment() -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in ("robustness-harness", "torch", "numpy", "scipy", "scikit-learn", "pyautoattack", "torchattacks", "foolbox", "tabulate", "tqdm"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "torch_threads": torch.get_num_threads(), "git_commit": git_commit()}


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def write_atomic(out: Path, files: dict[str, str | bytes]) -> None:
    """Write each file (text, or bytes; a name may hold a sub-folder, ``figures/x.png``) to a temporary name beside
    its place and rename it into place: no half-written report."""
    out.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, text in files.items():
            final = out / name
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", newline="") as fh:
                fh.write(text)
            staged.append((tmp, final))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def final_rows(results: list[DefenseResult], meta: dict, gradients: dict[str, str] | None) -> tuple[list[dict], dict]:
    """results.csv's rows, the gradient-masking flags set on them (``gradients``: attack name ->
    ``Attack.gradients``; a ``flags`` value on the rows where a check fired), and ``meta`` with their warnings."""
    rows = result_rows(results, dataset=meta["dataset"], model=meta["model"], seed=meta["seed"],
                       config_hash=meta["config_hash"], identity={k: meta[k] for k in IDENTITY if k in meta})
    flags = masking_flags(rows, gradients or {})
    if any(flags):
        for row, fs in zip(rows, flags):
            row["flags"] = "; ".join(f.split(":")[0] for f in fs)
        meta = {**meta, "warnings": [*meta.get("warnings", []), *warnings(rows, flags)]}
    return rows, meta


def csv_columns(results: list[DefenseResult], rows: list[dict]) -> list[str]:
    """results.csv's columns: the contract's, then those that apply to this run (detector, certifier, flags)."""
    detector = any("robust_reject_defended" in c.verdict.extra for res in results for c in res.cells)
    certified = any(c.certifies for res in results for c in res.cells)
    flagged = any(r.get("flags") for r in rows)
    return COLUMNS + EXTRA_COLUMNS + (DETECTOR_COLUMNS if detector else []) + (CERTIFIED_COLUMNS if certified else []) \
        + (FLAG_COLUMNS if flagged else [])


def write_report(out: Path, results: list[DefenseResult], labels, meta: dict, run_info: dict, samples: bool = True,
                 gradients: dict[str, str] | None = None, figures: bool = True,
                 extra_files: dict[str, str] | None = None) -> list[dict]:
    """Write the run's files atomically; ``gradients`` (attack name -> ``Attack.gradients``): run the
    gradient-masking checks, whose flags go in a ``flags`` column and in results.md's warnings.  ``figures``:
    draw the run's figures into ``out``/figures (``harness.figures``; only those with something to show) and
    link them from results.md; results.csv is the same either way.  ``extra_files``: more files of the run
    (indices.txt), written with the others."""
    rows, meta = final_rows(results, meta, gradients)
    columns = csv_columns(results, rows)
    files = {"results.csv": to_csv(rows, columns),
             "results.md": to_markdown(rows, meta),
             "timings.csv": to_csv(timing_rows(results), TIMING_COLUMNS),
             "run.json": json.dumps(run_info, indent=2, sort_keys=True, default=str) + "\n", **(extra_files or {})}
    srows = sample_rows(results, labels) if samples else None
    if srows:
        files["samples.csv"] = to_csv(srows, list(srows[0]))
    if figures:  # harness.figures: only what there is to draw (several budgets, distances, detector scores)
        from .figures import Samples, run_figures

        keys = {k for res in results for c in res.cells for k in c.verdict.extra}
        files["results.md"] += run_figures(out, rows, srows if srows is not None else
                                           Samples(keys, lambda: sample_rows(results, labels)), meta, run_info)
    write_atomic(out, files)
    return rows
