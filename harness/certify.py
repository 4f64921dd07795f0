"""Certified robustness of a smoothed classifier: CERTIFY over a dataset, tables and the accuracy-radius curve.

Definitions (Cohen et al. 2019, section 4 and ``code/analyze.py``):
- a sample is *certified at radius r* iff CERTIFY returned the true label with radius >= r (an abstention
  returns -1 and radius 0, so it is never certified, not even at r = 0);
- *certified accuracy at r* = fraction of samples certified at r (95% Clopper-Pearson interval alongside);
- *mean certified radius* = mean over ALL samples of the radius when the prediction is correct and 0 when it
  is wrong or abstains (the "average certified radius" of Zhai et al. 2020, MACER);
- *abstain rate* = fraction of samples on which CERTIFY abstained.
Certificates are L2.  An Linf budget eps is reported through the L2 ball that contains the Linf ball,
radius eps * sqrt(d) (d = pixels x channels): sufficient, and loose.

Each evaluation batch is seeded from the run seed (``harness.engine.cell_seed``), so results are
reproducible for a seed and batch size.  ``harness certify`` is the command line.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tabulate import tabulate

from .engine import cell_seed
from .metrics import accuracy

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
SAMPLE_COLUMNS = ["idx", "label", "predict", "radius", "correct"]
TABLE_COLUMNS = ["dataset", "model", "defense", "sigma", "n0", "n", "alpha", "images", "radius_label", "radius",
                 "certified_acc", "ci_low", "ci_high", "abstain_rate", "mean_radius", "seed"]
CURVE_COLUMNS = ["radius", "certified_acc"]


@dataclass
class Certificates:
    """Per-sample CERTIFY output: label, prediction (-1 = abstain), L2 radius; and the time it took."""

    label: torch.Tensor
    predict: torch.Tensor
    radius: torch.Tensor
    seconds: float = 0.0

    @property
    def correct(self) -> torch.Tensor:
        return self.predict == self.label

    def certified(self, r: float) -> torch.Tensor:
        """Samples certified at L2 radius r: correct and radius >= r."""
        return self.correct & (self.radius >= r)

    @property
    def abstain_rate(self) -> float:
        return float((self.predict < 0).double().mean()) if len(self.predict) else math.nan

    @property
    def mean_radius(self) -> float:
        """Mean over all samples of radius * [correct] (0 when wrong or abstaining)."""
        return float(torch.where(self.correct, self.radius.double(), 0.0).mean()) if len(self.radius) else math.nan


def certify_dataset(defense, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, n0: int | None = None,
                    n: int | None = None, alpha: float | None = None, batch_size: int = 100, seed: int = 0,
                    device: torch.device | str = "cpu", progress=None) -> Certificates:
    """Run the defense's CERTIFY (``Defense.certifying_part``) on (x, y) in batches of ``batch_size`` images, each
    seeded from ``seed``."""
    model = model.to(device).eval()
    certifier = defense.certifying_part()
    preds, radii = [], []
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(y), batch_size)):
        torch.manual_seed(cell_seed(seed, "certify", b))
        p, r = certifier.certify(model, x[start:start + batch_size].to(device), n0=n0, n=n, alpha=alpha)
        preds.append(p.cpu())
        radii.append(r.cpu().double())
        if progress is not None:
            progress(len(p))
    return Certificates(y.cpu().long(), torch.cat(preds).long(), torch.cat(radii), time.perf_counter() - t0)


def robustify_dataset(defense, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 100,
                      seed: int = 0, device: torch.device | str = "cpu", progress=None) -> torch.Tensor:
    """x_r = ``defense.prepare`` of each batch (a preemptive defense; seeded per batch), for certifying x_r."""
    model = model.to(device).eval()
    out = []
    for b, start in enumerate(range(0, len(y), batch_size)):
        torch.manual_seed(cell_seed(seed, "robustify", b))
        out.append(defense.prepare(model, x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)).detach().cpu())
        if progress is not None:
            progress(len(out[-1]))
    return torch.cat(out)


def radii_for(eps: float | None = None, norm: str = "l2", dim: int | None = None,
              radii=DEFAULT_RADII) -> list[tuple[str, float]]:
    """(label, L2 radius) pairs: the standard radii, then the attack budget (Linf eps -> L2 eps * sqrt(dim))."""
    out = [(f"{r:g}", float(r)) for r in radii]
    if eps is not None:
        if norm == "linf":
            if dim is None:
                raise ValueError("an Linf budget needs the input dimension")
            out.append((f"eps linf {eps:g} (L2 {eps * math.sqrt(dim):.4g})", eps * math.sqrt(dim)))
        else:
            out.append((f"eps l2 {eps:g}", float(eps)))
    return out


def table_rows(cert: Certificates, radii: list[tuple[str, float]], meta: dict) -> list[dict]:
    """One row per radius: certified accuracy (percent, two decimals) with its 95% interval."""
    rows = []
    for label, r in radii:
        acc = accuracy(cert.certified(r))
        rows.append({**meta, "images": len(cert.label), "radius_label": label, "radius": f"{r:.6g}",
                     "certified_acc": f"{acc['acc']:.2f}", "ci_low": f"{acc['ci_low']:.2f}", "ci_high": f"{acc['ci_high']:.2f}",
                     "abstain_rate": f"{100 * cert.abstain_rate:.2f}", "mean_radius": f"{cert.mean_radius:.4f}"})
    return rows


def curve_rows(cert: Certificates, step: float = 0.01) -> list[dict]:
    """Certified accuracy (percent) on a grid of radii 0, step, 2 step, ... past the largest radius (to 0)."""
    top = float(cert.radius.max()) if len(cert.radius) else 0.0
    k_max = int(math.floor(top / step + 1e-9)) + 1
    grid = [round(k * step, 10) for k in range(k_max + 1)]  # round: 3 * 0.1 must be 0.3, not 0.30000000000000004
    return [{"radius": f"{r:.4f}", "certified_acc": f"{100 * float(cert.certified(r).double().mean()):.2f}"} for r in grid]


def sample_rows(cert: Certificates, index=None) -> list[dict]:
    """Cohen et al.'s per-image output (idx, label, predict, radius, correct); time is kept out (not reproducible).

    ``index``: the dataset index of each image (default 0, 1, ...).
    """
    index = list(range(len(cert.label))) if index is None else [int(i) for i in index]
    return [{"idx": index[i], "label": int(cert.label[i]), "predict": int(cert.predict[i]), "radius": f"{float(cert.radius[i]):.4f}",
             "correct": int(cert.correct[i])} for i in range(len(cert.label))]


def to_markdown(rows: list[dict], curve: list[dict], meta: dict, seconds: float | None = None) -> str:
    head = ["Radius (L2)", "Certified acc.", "95% CI"]
    body = [[r["radius_label"], r["certified_acc"], f"[{r['ci_low']}, {r['ci_high']}]"] for r in rows]
    first = rows[0] if rows else {}
    lines = [f"# Certified robustness: {meta['dataset']} / {meta['model']} ({meta['defense']}, sigma {meta['sigma']})", "",
             f"CERTIFY (Cohen et al. 2019) on {first.get('images', 0)} images: n0 = {meta['n0']}, n = {meta['n']}, "
             f"alpha = {meta['alpha']}; seed {meta['seed']}. Certified accuracy at r = percent of images whose prediction "
             "is correct with radius >= r (abstentions never count). Mean certified radius = mean over all images of the "
             "radius, 0 when wrong or abstaining. An Linf budget is certified through the L2 ball of radius eps*sqrt(d) "
             "that contains it.", "",
             tabulate(body, headers=head, tablefmt="github", disable_numparse=True), "",
             f"Abstain rate: {first.get('abstain_rate', '')}%. Mean certified radius: {first.get('mean_radius', '')}."]
    if seconds is not None:
        lines += ["", f"Time: {seconds:.1f} s."]
    lines += ["", "## Certified accuracy vs radius", "",
              tabulate([[c["radius"], c["certified_acc"]] for c in curve[:: max(1, len(curve) // 20)]],
                       headers=["Radius (L2)", "Certified acc."], tablefmt="github", disable_numparse=True),
              "", "(every point of the curve is in certified_curve.csv)", ""]
    return "\n".join(lines)


def report_files(cert: Certificates, radii: list[tuple[str, float]], meta: dict, step: float = 0.01,
                 index=None) -> dict[str, str]:
    """The text of certified.csv, certified_curve.csv, certified_samples.csv and certified.md.

    All four are reproducible for a seed on CPU (the time goes in the run's JSON, not here).
    """
    from .report import to_csv

    rows = table_rows(cert, radii, meta)
    curve = curve_rows(cert, step)
    return {"certified.csv": to_csv(rows, TABLE_COLUMNS), "certified_curve.csv": to_csv(curve, CURVE_COLUMNS),
            "certified_samples.csv": to_csv(sample_rows(cert, index), SAMPLE_COLUMNS),
            "certified.md": to_markdown(rows, curve, meta)}


def cmd_certify(args, argv: list[str]) -> int:
    """``harness certify``: certify --n images (every --skip-th) and write the certified tables atomically."""
    import datetime as dt
    import hashlib
    import json
    from pathlib import Path

    from harness.core import progress
    from harness.core.budget import Budget
    from harness.core.defense import Preemptive
    from harness.core.errors import UsageError
    from harness.core.registry import DEFENSES

    from . import assembly
    from .config import Overrides, parse_eps
    from .data import load
    from .report import environment, write_atomic
    from .writable import probe_writable

    if args.out is not None:
        probe_writable(Path(args.out))
    assembly.require_positive(N0=args.N0, N=args.N, batch=args.batch, skip=args.skip, batch_size=args.batch_size, n=args.n)
    if not args.step > 0:
        raise UsageError("--step must be > 0")
    try:
        radii = tuple(float(r) for r in args.radii.split(",") if r.strip())
    except ValueError:
        raise UsageError(f"--radii expects comma-separated numbers, got {args.radii!r}") from None
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    overrides = Overrides(args.set)
    entry = DEFENSES.get(args.defense)
    path = entry.declared("certifier")  # Defense.certifier: "" the defense itself, a part's name, None: none
    if path is None:
        able = [n for n in DEFENSES.list() if DEFENSES.get(n).declared("certifier") is not None]
        raise UsageError(f"--defense {args.defense} certifies nothing (certifying defenses: {', '.join(able)})")
    prefix = f"{path}." if path else ""
    smooth_kw = {prefix + k: v for k, v in {"sigma": args.sigma, "n0": args.N0, "n_certify": args.N,
                                            "batch": args.batch, "alpha": args.alpha}.items()}
    extra = overrides.for_plugin(DEFENSES, args.defense)
    clash = sorted(set(extra) & set(smooth_kw))
    if clash:
        raise UsageError(f"--set {clash[0]}: certify takes it as its own option (--sigma, --N0, --N, --alpha, --batch)")
    budget = {}
    if args.eps is not None:  # the attack budget a defense that prepares x_r (preempt_smooth) is built for
        at = Budget(args.norm, parse_eps(args.eps))
        budget = {k: at.norm if k == "norm" else at.eps for k in entry.declared("follows_budget", ())
                  if k in entry.params}
    defense = DEFENSES.create(args.defense, **smooth_kw, **{**budget, **extra})
    data = load(args.dataset, args.split or "test", args.data_dir)
    idx = torch.arange(0, len(data), args.skip)
    if args.n is not None:
        idx = idx[: args.n]
    eps = parse_eps(args.eps) if args.eps is not None else None
    device = assembly.pick_device(args.device)
    model, model_name = assembly.load_model(args.model, args.arch, data, overrides, device, args.data_dir)
    overrides.check_all_used()
    config = {"dataset": args.dataset, "split": args.split or "test", "model": model_name, "arch": args.arch,
              "defense": args.defense, "defense_params": extra, "sigma": args.sigma,
              "n0": args.N0, "n": args.N, "alpha": args.alpha, "batch": args.batch, "images": len(idx), "skip": args.skip,
              "batch_size": args.batch_size or 100, "eps": eps, "norm": args.norm, "radii": radii, "step": args.step, "seed": args.seed}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(args.out or Path("runs") / f"certify-{config_hash}")
    probe_writable(out)  # a trial write, before any work: os.access says yes under /proc or on a read-only mount
    x, y = data.x[idx], data.y[idx]
    if isinstance(defense, Preemptive):  # certify x_r (preemptive paper, Table 7)
        with progress.bar(len(idx), "robustify") as bar:
            x = robustify_dataset(defense, model, x, y, batch_size=args.batch_size or 100, seed=args.seed,
                                  device=device, progress=bar.update)
    with progress.bar(len(idx), "certify") as bar:
        cert = certify_dataset(defense, model, x, y, batch_size=args.batch_size or 100, seed=args.seed,
                               device=device, progress=bar.update)
    meta = {"dataset": args.dataset, "model": model_name, "defense": args.defense, "sigma": args.sigma, "n0": args.N0,
            "n": args.N, "alpha": args.alpha, "seed": args.seed}
    files = report_files(cert, radii_for(eps, args.norm, int(data.x[0].numel()), radii), meta, args.step, idx.tolist())
    files["certify.json"] = json.dumps({"config": config, "config_hash": config_hash, "argv": ["harness", *argv],
                                        "seconds": cert.seconds, "started": started,
                                        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                        **environment()}, indent=2, sort_keys=True, default=str) + "\n"
    from .figures import certify_figures  # figures/certified_vs_radius.png and .pdf, linked from certified.md

    files["certified.md"] += certify_figures(out, files["certified_curve.csv"], files["certified.csv"], meta)
    write_atomic(out, files)
    if not progress.is_quiet():
        print(files["certified.md"].split("## Certified accuracy vs radius")[0].rstrip())
        print(f"\nwrote {out}/certified.csv, certified_curve.csv, certified_samples.csv, certified.md ({cert.seconds:.1f} s)")
    return 0
