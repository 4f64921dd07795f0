"""The robustness degradation table (JATP paper, Table 1 and Table 2) at small scale, in Markdown.

Rows None / HGD / NRP / JATP, plus JATP trained on oblivious examples and HGD retrained on full ones (the
proof-of-concept of Fig. 1(c)/2(a), eq. 3); columns Natural and the white-box robust accuracy under PGD, DLR
(PGD on the DLR loss), AA (AutoAttack standard, on the first --aa-n images: it is slow through a purifier on
the CPU), BPDA (identity backward, Fig. 4(a)), BPDA-raw (BPDA whose surrogate is P without its output clamp,
so gradients also pass where the clamp is flat) and the per-sample worst case over PGD, DLR, BPDA, BPDA-raw;
an oblivious-PGD column shows what the purifiers do against attacks that ignore them.  Every white-box
attack sees the full model T∘P (the "adaptive attack strategy" of Sec. 4.2).  A cross-model table applies
the same purifiers, trained against ``--model``, unchanged to ``--cross-model`` (Table 2's setting).  Each
table ends with the checks of the paper's claims (the direction of the effect), printed as text.

    python scripts/purifier_table.py --threads 1 --aa-n 60          # ~20 min on a busy 2-core CPU (AA dominates)
    python scripts/purifier_table.py --threads 1 --no-aa            # ~6 min: all but the AA column
    python scripts/purifier_table.py --dataset mnist --data-dir ../shared/data --threads 1 --n 300 --no-aa \
        --no-obl-row --dynamic-passes 0                             # MNIST 28x28, Linf 0.3 (see PRESETS)

The purifiers train on first use (10 s to 2 min each on the CPU for digits; about 15 min (NRP, HGD) and
50 min (JATP) for MNIST) and are cached (see defenses/purifiers).  On MNIST the target and the purifiers
train on ``test-train`` (test images 0-7,999) and the table uses the first N of ``test-holdout``.
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

ROWS = [("None", "none", {}), ("HGD", "hgd", {}), ("NRP", "nrp", {}), ("JATP", "jatp", {}),
        ("JATP-obl", "jatp", {"mode": "obl"}), ("HGD-full", "hgd", {"mode": "full"})]
EXTRA_ROWS = ("JATP-obl", "HGD-full")  # Fig. 1(c) / 2(a): oblivious vs full training examples

# Per dataset: evaluation split, target, cross-model target, Linf budget, and the purifiers' settings (they train
# at the dataset's budget by default).  MNIST: JATP for 4 epochs (5 on digits) to fit an hour of one core; the
# cross-model target is the other Linf-robust MNIST model (Alg. 2 of the preemptive paper): the L2-trained one
# keeps ~1% under Linf 0.3, too little to show anything.
PRESETS = {
    "digits": {"split": "test", "model": "digits_cnn_adv", "cross": "digits_cnn_adv_l2", "eps": 0.1, "sets": {}},
    "mnist": {"split": "test-holdout", "model": "mnist_cnn_adv", "cross": "mnist_cnn_preempt", "eps": 0.3,
              "sets": {"jatp": {"train_epochs": 4}}},
}


def build_attacks(eps: float, steps: int) -> list:
    from attacks.pgd import PGD

    return [("PGD", PGD(norm="linf", eps=eps, steps=steps, alpha=eps / 4, threat="white-box")),
            ("DLR", PGD(norm="linf", eps=eps, steps=steps, alpha=eps / 4, loss="dlr", threat="white-box")),
            ("BPDA", ATTACKS.create("bpda", norm="linf", eps=eps, **{"inner.steps": steps, "inner.alpha": eps / 4})),
            ("BPDA-raw", ATTACKS.create("bpda", norm="linf", eps=eps, backward="approx",
                                        **{"inner.steps": steps, "inner.alpha": eps / 4})),
            ("Obl. PGD", PGD(norm="linf", eps=eps, steps=steps, alpha=eps / 4, threat="oblivious"))]


def parse_sets(pairs: list[str]) -> dict[str, dict]:
    """``--set nrp.train_epochs=24`` -> {"nrp": {"train_epochs": 24}} (typed by the defense's signature)."""
    out: dict[str, dict] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        name, _, param = key.partition(".")
        entry = DEFENSES.get(name)
        if param not in entry.params or not text:
            raise SystemExit(f"--set {pair}: expected DEFENSE.PARAM=VALUE with PARAM one of {', '.join(entry.params)}")
        out.setdefault(name, {})[param] = entry.params[param].parse(text)
    return out


def table(model_name: str, rows, attacks, n: int | None, batch_size: int, seed: int, quiet: bool, sets: dict,
          passes: int = 1, *, dataset: str = "digits", split: str = "test", data_dir: str | None = None,
          purifier_target: str | None = None):
    """Evaluate ``rows`` in front of ``model_name``; the purifiers are trained against ``purifier_target``."""
    from harness.data import load
    from harness.evaluate import evaluate
    from harness.models.zoo import load_zoo

    data = load(dataset, split, data_dir).take(n)
    model = load_zoo(model_name, "cpu", quiet=quiet, data_dir=data_dir)
    context = {"target": purifier_target or model_name, "dataset": dataset, "data_dir": data_dir, "quiet": quiet}
    defenses = []
    for label, name, kw in rows:
        t0 = time.perf_counter()
        ctx = {k: v for k, v in context.items() if k in DEFENSES.get(name).params}
        defenses.append((label, DEFENSES.create(name, **{**ctx, **sets.get(name, {}), **kw})))
        if not quiet:
            print(f"[{label}: ready in {time.perf_counter() - t0:.1f}s]", file=sys.stderr)
    t0 = time.perf_counter()
    results = evaluate(model, data, defenses, attacks, batch_size=batch_size, seed=seed,
                       device=torch.device("cpu"), passes=passes, quiet=quiet)
    seconds = time.perf_counter() - t0
    out = {}
    for res in results:
        row = {"Natural": 100 * res.clean.float().mean().item()}
        worst = res.clean.clone()
        for cell in res.cells:
            row[cell.attack] = 100 * cell.verdict.robust.float().mean().item()
            if cell.threat == "white-box":
                worst &= cell.verdict.robust
        row["Worst (white-box)"] = 100 * worst.float().mean().item()
        out[res.defense] = row
    return out, len(data), seconds


def markdown(results: dict, columns: list[str]) -> str:
    body = [[name] + [f"{row[c]:.2f}" if row.get(c) == row.get(c) else "-" for c in columns]
            for name, row in results.items()]
    return tabulate(body, headers=["Defense"] + columns, tablefmt="github", disable_numparse=True)


def checks(res: dict) -> list[str]:
    """The paper's claims, checked on this table (PGD and the white-box worst case)."""
    lines = []
    if "None" not in res:
        return lines
    none = res["None"]
    for col in ("PGD", "Worst (white-box)"):
        for d in ("HGD", "NRP", "JATP", "JATP-obl"):
            if d not in res:
                continue
            delta = res[d][col] - none[col]
            lines.append(f"- {col}: {d} {res[d][col]:.2f} vs None {none[col]:.2f} ({delta:+.2f} points): "
                         f"{'degradation' if delta < 0 else 'no degradation'}")
    if all(k in res for k in ("HGD", "NRP", "JATP")):
        col = "Worst (white-box)"
        best_obl = max(res["HGD"][col], res["NRP"][col])
        lines.append(f"- JATP loses less than HGD and NRP (worst case): {res['JATP'][col]:.2f} vs max(HGD, NRP) "
                     f"{best_obl:.2f}: {'yes' if res['JATP'][col] > best_obl else 'NO'}")
        lines.append(f"- Clean accuracy kept (|Natural - None| <= 2 points): " + ", ".join(
            f"{d} {res[d]['Natural'] - none['Natural']:+.2f}" for d in ("HGD", "NRP", "JATP")))
    col = "Worst (white-box)"
    for full, obl in (("JATP", "JATP-obl"), ("HGD-full", "HGD")):
        if full in res and obl in res:
            better = res[full][col] > res[obl][col]
            lines.append(f"- Full vs oblivious training examples (Fig. 1(c), 2(a)): {full} {res[full][col]:.2f} vs {obl} "
                         f"{res[obl][col]:.2f}: {'full better' if better else 'full NOT better'}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(PRESETS), default="digits")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST idx files (--dataset mnist)")
    p.add_argument("--model", default=None, help="target the purifiers are trained against (default: the preset's)")
    p.add_argument("--cross-model", default=None, help="another target ('' to skip; default: the preset's)")
    p.add_argument("--eps", type=float, default=None, help="Linf budget (default: the preset's)")
    p.add_argument("--rows", default=None, help="comma-separated row labels to keep (default: all)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aa-n", type=int, default=60,
                   help="AutoAttack (standard) on the first AA_N images only: it is slow through a purifier on the CPU")
    p.add_argument("--no-aa", action="store_true")
    p.add_argument("--aa-only", action="store_true", help="only the AA column (with Natural), on the first AA_N images")
    p.add_argument("--set", action="append", default=[], metavar="DEFENSE.PARAM=VALUE",
                   help="purifier setting, e.g. nrp.train_epochs=24 (a different setting trains and caches anew)")
    p.add_argument("--no-obl-row", action="store_true", help="skip the JATP-obl and HGD-full rows (saves two trainings)")
    p.add_argument("--dynamic-passes", type=int, default=5,
                   help="add the dynamic-NRP table (PGD vs EOT-PGD), judged over this many passes (0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 is fastest on a busy machine)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_builtins()
    preset = PRESETS[args.dataset]
    args.model = args.model or preset["model"]
    args.cross_model = preset["cross"] if args.cross_model is None else args.cross_model
    args.eps = args.eps if args.eps is not None else preset["eps"]
    rows = [r for r in ROWS if not (args.no_obl_row and r[0] in EXTRA_ROWS)]
    if args.rows:
        keep = args.rows.split(",")
        unknown = [r for r in keep if r not in {label for label, _, _ in ROWS}]
        if unknown:
            raise SystemExit(f"--rows: unknown row {unknown[0]!r}; rows: {', '.join(r[0] for r in ROWS)}")
        rows = [r for r in rows if r[0] in keep]
    sets = preset["sets"] | {}
    for name, kw in parse_sets(args.set).items():
        sets[name] = {**sets.get(name, {}), **kw}
    where = {"dataset": args.dataset, "split": preset["split"], "data_dir": args.data_dir}
    if args.aa_only:
        aa = [("AA", ATTACKS.create("autoattack", norm="linf", eps=args.eps))]
        t0 = time.perf_counter()
        aa_res, aa_n, _ = table(args.model, rows, aa, args.aa_n, args.batch_size, args.seed, args.quiet, sets, **where)
        print(f"### AutoAttack standard (pyautoattack) through the full model, target {args.model} ({args.dataset} "
              f"{preset['split']}, first {aa_n} images, Linf eps {args.eps:g})\n")
        print(markdown(aa_res, ["Natural", "AA"]))
        print(f"\n({time.perf_counter() - t0:.0f}s; seed {args.seed}; command: python scripts/purifier_table.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])})")
        return 0
    attacks, notes = build_attacks(args.eps, args.steps), []
    cols = ["Natural", "PGD", "DLR", "BPDA", "BPDA-raw", "Worst (white-box)", "Obl. PGD"]
    t0 = time.perf_counter()
    res, n, sec = table(args.model, rows, attacks, args.n, args.batch_size, args.seed, args.quiet, sets, **where)
    if not args.no_aa and "autoattack" in ATTACKS:
        aa_rows = [r for r in rows if r[0] not in EXTRA_ROWS]
        aa = [("AA", ATTACKS.create("autoattack", norm="linf", eps=args.eps))]
        aa_res, aa_n, aa_sec = table(args.model, aa_rows, aa, args.aa_n, args.batch_size, args.seed, args.quiet, sets,
                                     **where)
        sec += aa_sec
        col = f"AA (first {aa_n})"
        cols.insert(3, col)
        for label, row in res.items():
            row[col] = aa_res[label]["AA"] if label in aa_res else float("nan")
        notes.append(f"AA = AutoAttack standard (pyautoattack) on the first {aa_n} images only (slow through a purifier "
                     f"on the CPU); the worst case is over PGD, DLR and BPDA on all {n} images.")
    elif not args.no_aa:
        notes.append("AA: not run - no `autoattack` attack is registered (attacks/autoattack.py absent).")
    print(f"### White-box robustness (%) of preprocessing defenses, target {args.model} ({args.dataset} "
          f"{preset['split']}, Linf eps "
          f"{args.eps:g}, n = {n}, PGD/DLR/BPDA: {args.steps} steps of eps/4)\n")
    print(markdown(res, cols))
    print("\n" + "\n".join(checks(res)))
    if args.cross_model:
        cross_rows = [r for r in rows if r[0] not in EXTRA_ROWS]
        cres, _, csec = table(args.cross_model, cross_rows, attacks, args.n, args.batch_size, args.seed, args.quiet, sets,
                              purifier_target=args.model, **where)
        sec += csec
        print(f"\n### Cross-model: the same purifiers (trained against {args.model}) in front of {args.cross_model}\n")
        print(markdown(cres, [c for c in cols if not c.startswith("AA")]))
        print("\n" + "\n".join(checks(cres)))
    if args.dynamic_passes:
        from attacks.pgd import PGD

        dyn_attacks = [("PGD", PGD(norm="linf", eps=args.eps, steps=args.steps, alpha=args.eps / 4, threat="white-box",
                                   early_stop=False)),
                       ("EOT-PGD", ATTACKS.create("eot", samples=10, norm="linf", eps=args.eps,
                                                  **{"inner.steps": args.steps, "inner.alpha": args.eps / 4}))]
        dyn_rows = [("NRP", "nrp", {}), ("NRP dynamic", "nrp", {"dynamic": True})]
        dres, dn, dsec = table(args.model, dyn_rows, dyn_attacks, args.n, args.batch_size, args.seed, args.quiet, sets,
                               passes=args.dynamic_passes, **where)
        sec += dsec
        print(f"\n### Random preprocessor: NRP's dynamic inference (x + N(0, 0.05^2) within Linf 16/255 before P), "
              f"white-box, target {args.model}, n = {dn}; a random defense is judged over {args.dynamic_passes} "
              f"classifications of each image (the worst case)\n")
        print(markdown(dres, ["Natural", "PGD", "EOT-PGD"]))
        print("\nPGD follows one random draw per step; EOT-PGD the mean probability over 10 draws per step "
              "(Athalye et al. 2018).")
    for note in notes:
        print(f"\nNote: {note}")
    print(f"\n(evaluation {sec:.0f}s, total {time.perf_counter() - t0:.0f}s; seed {args.seed}; "
          f"command: python scripts/purifier_table.py {' '.join(argv if argv is not None else sys.argv[1:])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
