"""The zoo table of README.md and ``reports/baselines/zoo_digits.csv``: clean and PGD-20 accuracy of each shipped entry.

    python scripts/zoo_table.py                 # prints the Markdown table, writes the CSV
    python scripts/zoo_table.py --check         # recomputes and exits 1 if any number differs from the CSV

Each entry is evaluated at its own training budget (the norm and eps of its recipe; the dataset's default budget for
the Linf norm otherwise) with ``harness run --defense none --attack pgd_<norm>`` on all of its dataset's test images,
seed 0.  The numbers rest on the shipped weights only, so they are the same on every machine.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
from pathlib import Path

from harness.cli import main as harness
from harness.core.registry import ZOO
from harness.plugins import load_builtins

CSV = Path(__file__).resolve().parents[1] / "reports" / "baselines" / "zoo_digits.csv"
COLUMNS = ["model", "recipe", "norm", "eps", "n", "clean_acc", "robust_acc"]


def budget(spec) -> tuple[str, float | None]:
    norm = spec.recipe_kw.get("norm", "linf")
    return norm, spec.recipe_kw.get("eps")


def evaluate(name: str) -> dict:
    spec = ZOO.create(name)
    norm, eps = budget(spec)
    with tempfile.TemporaryDirectory() as out:
        argv = ["run", "--dataset", spec.dataset, "--model", name, "--defense", "none", "--attack", f"pgd_{norm}",
                "--out", out, "--quiet", *(["--eps", str(eps)] if eps is not None else [])]
        if harness(argv) != 0:
            raise SystemExit(f"zoo_table: {name} failed")
        row = next(csv.DictReader(open(Path(out) / "results.csv")))
    return {"model": name, "recipe": spec.recipe, "norm": norm, "eps": row["eps"], "n": row["n"],
            "clean_acc": row["clean_acc"], "robust_acc": row["robust_acc"]}


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    load_builtins()
    names = [n for n in ZOO.list() if ZOO.create(n).shipped]
    rows = [evaluate(n) for n in names]
    text = to_csv(rows)
    if args.check:
        same = CSV.read_text() == text
        print("zoo_digits.csv: " + ("identical" if same else "DIFFERENT\n" + text))
        return 0 if same else 1
    CSV.write_text(text)
    print("| zoo name | recipe | clean | PGD-20 |\n|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['recipe']} | {r['clean_acc']} | {r['robust_acc']} ({r['norm'].capitalize() if r['norm'] == 'l2' else 'Linf'} {r['eps']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
