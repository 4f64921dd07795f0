"""Numbers that a refactoring must leave unchanged: run a fixed list of commands, or compare two such runs.

    python scripts/reference_numbers.py run OUT        # OUT/<case>/results.csv (or certified.csv) per case
    python scripts/reference_numbers.py compare A B    # byte-compare every case; exit 1 on any difference

Run it on main before a change and on the change, with the same shipped weights (or the same ``HARNESS_CACHE``),
one thread (``OMP_NUM_THREADS=1``) and the same machine.
"""
from __future__ import annotations

import argparse
import csv
import filecmp
import subprocess
import sys
from pathlib import Path

CASES = {
    "default": "run --defense none --attack fgsm --attack pgd_linf",
    "preempt": "run --defense preempt --attack pgd_l2 --attack adaptive_l2 --set use_autoattack=false --n 50",
    "example": "run --defense preempt --attack adaptive_l2 --n 20",
    "jatp": "run --defense jatp --attack pgd_linf --attack bpda --n 50",
    "smoothing": "run --defense smoothing --attack pgd_smooth --n 30",
    "safe_spot_ood": "run --defense safe_spot_ood --attack pgd_detector --n 30",
    "magnet": "run --defense magnet --attack magnet_cw --n 30",
    "certify": "certify --model digits_cnn_gauss --n 20 --N 1000",
}
RESULT = {"certify": "certified.csv"}


def run(out: Path, only: list[str]) -> int:
    for name, cmd in CASES.items():
        if only and name not in only:
            continue
        folder = out / name
        if (folder / RESULT.get(name, "results.csv")).exists():
            continue
        argv = [sys.executable, "-m", "harness", *cmd.split(), "--out", str(folder), "--quiet"]
        print(" ".join(argv[2:]), flush=True)
        if subprocess.call(argv) != 0:
            return 1
    return 0


def compare(a: Path, b: Path) -> int:
    bad = 0
    for name in CASES:
        fa, fb = a / name / RESULT.get(name, "results.csv"), b / name / RESULT.get(name, "results.csv")
        if not (fa.exists() and fb.exists()):
            print(f"{name}: missing in {'A' if not fa.exists() else 'B'}")
            continue
        same = filecmp.cmp(fa, fb, shallow=False)
        bad += not same
        print(f"{name}: {'identical' if same else 'DIFFERENT' + numbers_only(fa, fb)}")
    return 1 if bad else 0


def numbers_only(a: Path, b: Path) -> str:
    """Whether two differing CSVs agree once the config_hash column is left out (a changed description)."""
    def rows(path):
        table = list(csv.DictReader(open(path)))
        return [{k: v for k, v in r.items() if k != "config_hash"} for r in table]
    return " (the same numbers: only config_hash differs)" if rows(a) == rows(b) else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--only", nargs="*", default=[], choices=list(CASES))
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args()
    return run(args.out, args.only) if args.cmd == "run" else compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
