"""The regression gate: compare a results.csv with a committed baseline (exit 3 on a regression)."""
from __future__ import annotations

import csv
from pathlib import Path

from tabulate import tabulate

from harness.core.errors import UsageError

KEY = ("dataset", "model", "defense", "attack", "threat", "norm", "eps")
METRICS = ("clean_acc", "robust_acc")


def read_rows(path: str) -> dict[tuple, dict]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such results file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in KEY + METRICS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: not a results.csv (missing column {missing[0]})")
        rows = {}
        for row in reader:
            rows[tuple(row[k] for k in KEY)] = row
    return rows


def compare(baseline: str, results: str, tolerance: float) -> tuple[bool, list[list]]:
    """Rows of (key, metric, baseline, now, change, status); ``ok`` is False when anything fell > tolerance."""
    if not tolerance >= 0:
        raise UsageError(f"--tolerance must be >= 0, got {tolerance}")
    base, now = read_rows(baseline), read_rows(results)
    table, ok = [], True
    for key, brow in base.items():
        label = "/".join(key[2:5]) + f" {key[5]} {key[6]}"
        if key not in now:
            table.append([label, "-", "", "", "", "MISSING"])
            ok = False
            continue
        for metric in METRICS:
            b, n = float(brow[metric]), float(now[key][metric])
            fell = b - n > tolerance + 1e-9
            ok &= not fell
            table.append([label, metric, f"{b:.2f}", f"{n:.2f}", f"{n - b:+.2f}", "REGRESSION" if fell else "ok"])
    return ok, table


def run_check(baseline: str, results: str, tolerance: float) -> int:
    ok, table = compare(baseline, results, tolerance)
    print(tabulate(table, headers=["cell", "metric", "baseline", "now", "change", "status"], tablefmt="github",
                   disable_numparse=True))
    print(f"\n{'no regression' if ok else 'REGRESSION'} (tolerance {tolerance:g} points)")
    return 0 if ok else 3
