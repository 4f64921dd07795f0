"""Table 1 of the safe-spot paper (Moon, An & Song; ``../shared/seeds/safe-spots-ood-detection.md``) at small scale.

    python scripts/safe_spot_table.py --n 100                  # Linf, eps = delta = 0.1, digits test images

Rows: models (Natural = zoo ``digits_cnn``, ADV = ``digits_cnn_adv`` (PGD-5 adversarial training), S-FGSM+ADV =
``digits_cnn_sfgsm_adv`` and S-PGD+ADV = ``digits_cnn_spgd_adv`` (safe-spot-aware adversarial training, section 3.5,
PGD-5, eps = delta = 0.1)).  Columns: the safe-spot search (None = the original image; S-FGSM = targeted FGSM of
size delta towards c(x_o); S-PGD = 20 targeted PGD steps of delta/4; S-Full = Algorithm 1 with MAXITER = --maxiter,
T = 20, N = 1).  Each cell: clean accuracy / adversarial accuracy under grey-box 20-step PGD (step eps/4, random
start, ball B_eps(x_s)), as in section 4 ("adversarial accuracy refers to the prediction score under 20-step
untargeted PGD attack with a step size of eps/4").

Each model is three ``harness run`` invocations (in-process, ``harness.cli.main``), one per search method (one
registered defense takes one parameter set per run):
    harness run --model M --defense none --defense safe_spot --set safe_spot.method=fgsm --attack pgd_linf --n N
    harness run --model M --defense safe_spot --set safe_spot.method=pgd --attack pgd_linf --n N
    harness run --model M --defense safe_spot --set safe_spot.method=full --set safe_spot.maxiter=K --attack pgd_linf --n N
Their results.csv files are kept under --out.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tables import harness_rows

MODELS = {"Natural": "digits_cnn", "ADV": "digits_cnn_adv", "S-FGSM+ADV": "digits_cnn_sfgsm_adv",
          "S-PGD+ADV": "digits_cnn_spgd_adv"}
METHODS = {"fgsm": "S-FGSM", "pgd": "S-PGD", "full": "S-Full"}


def cell(rows: list[dict], defense: str) -> str:
    for r in rows:
        if r["defense"] == defense and r["attack"] == "pgd_linf":
            return f"{float(r['clean_acc']):05.2f}/{float(r['robust_acc']):05.2f}"
    return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100, help="first N digits test images (360 in all)")
    p.add_argument("--maxiter", type=int, default=100, help="MAXITER of S-Full (Algorithm 1; paper: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/safe_spot_table")
    args = p.parse_args(argv)

    common = ["--attack", "pgd_linf", "--norm", "linf", "--n", str(args.n), "--seed", str(args.seed), "--quiet"]
    table = []
    t0 = time.time()
    for label, model in MODELS.items():
        base = Path(args.out) / model
        row = [label]
        rows_none = None
        for method in METHODS:
            defenses = (["--defense", "none"] if method == "fgsm" else []) + ["--defense", "safe_spot"]
            sets = ["--set", f"safe_spot.method={method}"] + (["--set", f"safe_spot.maxiter={args.maxiter}"] if method == "full" else [])
            rows = harness_rows(["run", "--model", model, *defenses, *sets, *common, "--out", str(base / method)])
            if method == "fgsm":
                rows_none = rows
                row.append(cell(rows, "none"))
            row.append(cell(rows, "safe_spot"))
        table.append(row)
        eps = rows_none[0]["eps"]
    head = ["Model", "None", "S-FGSM", "S-PGD", "S-Full"]
    lines = [f"Safe-spot paper Table 1 layout on digits (sklearn, first {args.n} test images): clean acc. / adv. acc. (%) "
             f"under grey-box PGD-20 (step eps/4), Linf eps = delta = {eps}; S-Full MAXITER = {args.maxiter}, T = 20, N = 1; "
             f"seed {args.seed}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    lines += ["", f"({time.time() - t0:.0f} s; results.csv of every run under {args.out}/<model>/<method>)"]
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
