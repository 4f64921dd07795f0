"""MagNet (Meng & Chen 2017) and the adaptive attack that breaks it (Carlini & Wagner 2017), in Markdown, on digits.

Rows: None (the bare classifier), MagNet with the reformer only (``detectors=none``), MagNet with detectors and
reformer (the ``magnet`` defaults: l2 + l1 reconstruction-error detectors, 1% false positives each on the training
split).  Columns: Clean; oblivious PGD (attacks the bare classifier; the defense then acts); white-box PGD through
the reformer (differentiates Z(ae(x)), ignores the detector); the adaptive attacks ``pgd_detector`` (PGD on CE -
lambda max(tau - s, 0)) and ``magnet_cw`` (the lecture's objective ||x'-x||^2 + c L_c + d L_d with Adam); and the
worst case per sample over the white-box attacks.  Each cell is "robust accuracy with a rejected adversarial image
counted as NOT defended / counted as defended" (the two readings coincide without a detector; a rejected clean
image is an error in both).  Every image an attack returns lies in the budget ball (checked by the harness).

    OMP_NUM_THREADS=1 python scripts/magnet_table.py                      # Linf 0.1 and L2 1.0, both models, n=360
    OMP_NUM_THREADS=1 python scripts/magnet_table.py --budgets l2:0.5 --models digits_cnn_adv --n 100
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from harness.core.registry import ATTACKS, DEFENSES
from harness.plugins import load_builtins

ROWS = [("None", "none", {}), ("MagNet (reformer only)", "magnet", {"detectors": "none"}),
        ("MagNet (detector+reformer)", "magnet", {})]
COLUMNS = ["Oblivious PGD", "White-box PGD (reformer)", "pgd_detector", "magnet_cw"]
WHITE_BOX = COLUMNS[1:]


def build_attacks(norm: str, eps: float, steps: int) -> list:
    from attacks.pgd import PGD

    return [("Oblivious PGD", PGD(norm=norm, eps=eps, steps=steps, threat="oblivious")),
            ("White-box PGD (reformer)", PGD(norm=norm, eps=eps, steps=steps, threat="white-box")),
            ("pgd_detector", ATTACKS.create("pgd_detector", norm=norm, eps=eps, steps=steps)),
            ("magnet_cw", ATTACKS.create("magnet_cw", norm=norm, eps=eps))]


def table(model_name: str, norm: str, eps: float, n: int | None, steps: int, seed: int, quiet: bool, magnet_kw: dict):
    from harness.data import load
    from harness.evaluate import evaluate
    from harness.models.zoo import load_zoo
    from harness.ood_metrics import auroc

    data = load("digits", "test").take(n)
    model = load_zoo(model_name, "cpu", quiet=quiet)
    defenses = [(label, DEFENSES.create(name, **({**magnet_kw, **kw} if name == "magnet" else kw)))
                for label, name, kw in ROWS]
    t0 = time.perf_counter()
    results = evaluate(model, data, defenses, build_attacks(norm, eps, steps), batch_size=500, seed=seed,
                       device=torch.device("cpu"), quiet=quiet)
    seconds = time.perf_counter() - t0
    body, detection = [], []
    pct = lambda t: 100 * t.float().mean().item()  # noqa: E731
    for res in results:
        row = [res.defense, f"{pct(res.clean):.2f}"]
        worst, worst_def = res.clean.clone(), res.clean.clone()
        for cell in res.cells:
            v = cell.verdict
            rd = v.extra.get("robust_reject_defended", v.robust)
            row.append(f"{pct(v.robust):.2f} / {pct(rd):.2f}")
            if cell.attack in WHITE_BOX:
                worst &= v.robust
                worst_def &= rd
            if "rejected" in v.extra:
                att = v.attacked
                ok = att & torch.isfinite(v.extra["score_clean"]) & torch.isfinite(v.extra["score_adv"])
                auc = 100 * auroc(v.extra["score_clean"][ok], v.extra["score_adv"][ok]) if ok.any() else float("nan")
                detection.append(f"{cell.attack}: {int((v.extra['rejected'][att] == 1).sum())}/{int(att.sum())} "
                                 f"rejected, AUROC {auc:.1f}, mean dist {v.dist[att].mean().item():.3f}")
        row.append(f"{pct(worst):.2f} / {pct(worst_def):.2f}")
        body.append(row)
    magnet_defense = next(d for label, d in defenses if label == ROWS[2][0])
    md = tabulate(body, headers=["Defense", "Clean"] + COLUMNS + ["Worst (white-box)"], tablefmt="github",
                  disable_numparse=True)
    return md, detection, len(data), seconds, magnet_defense


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="digits_cnn_adv,digits_cnn", help="zoo models, comma-separated")
    p.add_argument("--budgets", default="linf:0.1,l2:1.0", help="norm:eps pairs, comma-separated")
    p.add_argument("--n", type=int, default=None, help="first N test images (default: all 360)")
    p.add_argument("--steps", type=int, default=20, help="PGD and pgd_detector steps (step eps/4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detectors", default=None, help="MagNet detectors (default: the defense's, l2,l1)")
    p.add_argument("--fpr", type=float, default=None, help="MagNet false-positive rate per detector (default 0.01)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    load_builtins()
    magnet_kw = {k: v for k, v in (("detectors", args.detectors), ("fpr", args.fpr)) if v is not None}
    t0 = time.perf_counter()
    for budget in args.budgets.split(","):
        norm, _, eps = budget.partition(":")
        for model in args.models.split(","):
            md, detection, n, sec, mg = table(model, norm, float(eps), args.n, args.steps, args.seed, args.quiet,
                                              magnet_kw)
            print(f"### {model}, {norm} eps {float(eps):g}, first {n} digits test images "
                  f"({sec:.0f}s)\n")
            print(md)
            print(f"\nMagNet detectors {mg.detectors} (fpr {mg.fpr:g} each, thresholds "
                  + ", ".join(f"{k} {v:.4g}" for k, v in mg.thresholds.items()) + "): " + "; ".join(detection) + "\n")
    print("Cells: robust accuracy (%) with a rejected adversarial image counted as NOT defended / as defended. "
          "PGD and pgd_detector: " f"{args.steps} steps of eps/4 from a random start; magnet_cw: the attack's defaults "
          "(100 Adam steps, up to 5 values of c). Worst (white-box): per sample over the white-box PGD, pgd_detector "
          "and magnet_cw.")
    print(f"\n(total {time.perf_counter() - t0:.0f}s; seed {args.seed}; command: OMP_NUM_THREADS=1 python "
          f"scripts/magnet_table.py {' '.join(argv if argv is not None else sys.argv[1:])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
