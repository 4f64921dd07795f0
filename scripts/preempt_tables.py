"""Tables 1-2 of the preemptive robustification paper (Moon, An & Song, AAAI 2022) at small scale.

    python scripts/preempt_tables.py --norm linf --n 100          # Table 1 layout, digits (Linf, eps = delta = 0.1)
    python scripts/preempt_tables.py --norm l2 --n 100            # Table 2 layout, digits (L2, eps = delta = 0.5)
    python scripts/preempt_tables.py --dataset mnist --data-dir ../shared/data --norm linf --n 100   # MNIST, Linf 0.3
    python scripts/preempt_tables.py --dataset mnist --data-dir ../shared/data --norm l2 --n 100     # MNIST, L2 2.0

MNIST: the models train on the first 8,000 MNIST test images (split ``test-train``) and the tables use the first
N of the last 2,000 (``test-holdout``): only the MNIST test images ship with ../shared/data.

Rows: Model (ADV = PGD adversarial training, Ours = preemptively robust training, Algorithm 2) x Preempt (None,
Ours = Algorithm 1).  Columns: clean accuracy; grey-box PGD-20 and AutoAttack (ball at x_r); white-box adaptive
attack (Algorithms 3-4: reconstruction, then PGD-20 / AutoAttack swept over eps' in {0.25,..,1} x eps, the worst
case per sample, images outside B_eps(x_o) count as defended).  With Preempt = None there is nothing to
reconstruct: the white-box PGD column is the plain PGD sweep from x_o (measured), and the white-box AA column
repeats the grey-box AA value, as the paper does (its footnote 2), to save four AutoAttack runs (marked *).

Each model takes two ``harness run`` invocations (in-process, ``harness.cli.main``): none + preempt against PGD,
AutoAttack and the adaptive attack with PGD only; then preempt against the adaptive attack with AutoAttack only
(one registered attack cannot take two parameter sets in one run).  Their results.csv files are kept under --out.
On a shared CPU run with OMP_NUM_THREADS=1 (torch's default threads spin against other processes).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from tables import cell, harness_rows

# ADV and Ours trained alike (digits: 30 epochs, Algorithm 2 needs them there; MNIST: see the zoo).
MODELS = {("digits", "linf"): {"ADV": "digits_cnn_adv_e30", "Ours": "digits_cnn_preempt"},
          ("digits", "l2"): {"ADV": "digits_cnn_adv_l2_e30", "Ours": "digits_cnn_preempt_l2"},
          ("mnist", "linf"): {"ADV": "mnist_cnn_adv", "Ours": "mnist_cnn_preempt"},
          ("mnist", "l2"): {"ADV": "mnist_cnn_adv_l2", "Ours": "mnist_cnn_preempt_l2"}}
DATA = {"digits": (["--dataset", "digits"], "Digits (sklearn, first {n} test images)"),
        "mnist": (["--dataset", "mnist", "--split", "test-holdout"],
                  "MNIST (models trained on test images 0-7,999; evaluated on the first {n} of images 8,000-9,999)")}
PREEMPT = {"none": "None", "preempt": "Ours"}



def figure3(folder: Path, attack: str) -> str:
    """Figure 3 in numbers: ||x_hat_o - x_o|| and ||x_hat_o^a - x_o|| (eps' = eps, PGD) over the attacked samples."""
    rows = [r for r in csv.DictReader(open(folder / "samples.csv"))
            if r["defense"] == "preempt" and r["attack"] == attack and r["attacked"] == "1"]
    if not rows:
        return "no attacked samples"
    eps = float(next(csv.DictReader(open(folder / "results.csv")))["eps"])
    rec = sorted(float(r["rec_dist"]) for r in rows)
    adv = [float(r["adv_dist"]) for r in rows]
    return (f"median ||x_hat_o - x_o|| = {rec[len(rec) // 2]:.3f} (eps {eps:g}), "
            f"{100 * sum(d > eps * (1 + 1e-4) for d in adv) / len(adv):.0f}% of the eps'=eps PGD images lie outside B_eps(x_o)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--dataset", choices=sorted(DATA), default="digits")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST idx files (--dataset mnist)")
    p.add_argument("--n", type=int, default=100, help="first N evaluation images (digits: 360 in all; MNIST: 2,000)")
    p.add_argument("--maxiter", type=int, default=100, help="MAXITER of Algorithms 1 and 3 (paper: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-autoattack", action="store_true", help="skip the AutoAttack columns (slow on a CPU)")
    p.add_argument("--out", default="runs/preempt_tables")
    p.add_argument("--adv", default=None, help="zoo name of the ADV model (default: the 30-epoch PGD-AT entry)")
    p.add_argument("--ours", default=None, help="zoo name of the preemptively robust model")
    p.add_argument("--rows", default="ADV,Ours", help="which models to run (ADV, Ours or both)")
    p.add_argument("--reuse", action="store_true",
                   help="keep a harness run already in --out with the same command line (delete its folder to redo it)")
    args = p.parse_args(argv)
    default = MODELS[(args.dataset, args.norm)]
    models = {"ADV": args.adv or default["ADV"], "Ours": args.ours or default["Ours"]}
    models = {k: v for k, v in models.items() if k in args.rows.split(",")}

    from harness.core.registry import ATTACKS
    from harness.plugins import load_builtins

    load_builtins()
    use_aa = not args.no_autoattack
    grey_aa = use_aa and "autoattack" in ATTACKS
    adaptive = f"adaptive_{args.norm}"
    data_args, title = DATA[args.dataset]
    if args.data_dir:
        data_args = [*data_args, "--data-dir", args.data_dir]
    common = [*data_args, "--norm", args.norm, "--n", str(args.n), "--seed", str(args.seed), "--quiet",
              "--defense", "preempt", "--set", f"preempt.maxiter={args.maxiter}"]
    table, notes = [], []
    for label, model in models.items():
        base = Path(args.out) / args.dataset / args.norm / model
        attacks = ["--attack", "pgd"] + (["--attack", "autoattack"] if grey_aa else []) + ["--attack", adaptive]
        rows = harness_rows(["run", "--model", model, "--defense", "none", *common, *attacks,
                    "--set", f"{adaptive}.use_autoattack=false", "--out", str(base / "pgd")], reuse=args.reuse)
        rows_aa = harness_rows(["run", "--model", model, *common, "--attack", adaptive, "--set", f"{adaptive}.use_pgd=false",
                       "--out", str(base / "aa")], reuse=args.reuse) if use_aa else []
        for defense, name in PREEMPT.items():
            wb_aa = cell(rows_aa, defense, adaptive) if defense == "preempt" else cell(rows, defense, "autoattack") + "*"
            table.append([label, name, cell(rows, defense, "pgd", "clean_acc"), cell(rows, defense, "pgd"),
                          cell(rows, defense, "autoattack"), cell(rows, defense, adaptive), wb_aa])
        notes.append(f"{label}/Ours: white-box samples saved only by the validity rule (every misclassifying candidate "
                     f"outside B_eps(x_o)): PGD {cell(rows, 'preempt', adaptive, 'invalid')}, "
                     f"AA {cell(rows_aa, 'preempt', adaptive, 'invalid')}; {figure3(base / 'pgd', adaptive)}")
    eps = rows[0]["eps"]
    n = rows[0]["n"]
    head = ["Model", "Preempt.", "Clean", "Grey-box PGD", "Grey-box AA", "White-box PGD", "White-box AA"]
    lines = [f"{title.format(n=n)} classification accuracy (%) under grey-box and white-box "
             f"adversaries, {args.norm} eps = delta = {eps}, MAXITER = {args.maxiter}, seed {args.seed}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    lines += [""] + [f"- {t}" for t in notes]
    lines.append("- models: " + ", ".join(f"{k} = {v}" for k, v in models.items()))
    if use_aa:
        lines.append("- *: Preempt = None modifies nothing, so white-box AA = grey-box AA (the paper's footnote 2)")
    if use_aa and not grey_aa:
        lines.append("- grey-box AA: the `autoattack` attack is not registered in this checkout")
    text = "\n".join(lines)
    print(text)
    folder = Path(args.out) / args.dataset / args.norm
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
