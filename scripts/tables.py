"""What the table scripts share: run ``harness`` in-process and read back the CSV it wrote.

The scripts run from this folder (``python scripts/NAME.py``), so ``import tables`` finds this module.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.cli import main as harness_main  # noqa: E402


def harness_rows(argv: list[str], table: str = "results.csv", reuse: bool = False) -> list[dict]:
    """``harness ARGV`` (``--out`` required), then the rows of ``table`` in its output folder.

    ``reuse``: keep a run already in that folder whose recorded command line (``run.json``) is ``argv``.
    A non-zero exit stops the script with the command in the message.
    """
    out = Path(argv[argv.index("--out") + 1])
    record = out / "run.json"
    if not (reuse and record.is_file() and json.loads(record.read_text())["argv"][1:] == argv):
        code = harness_main(argv)
        if code != 0:
            raise SystemExit(f"harness failed with exit code {code}: {' '.join(argv)}")
    with open(out / table, newline="") as fh:
        return list(csv.DictReader(fh))


def cell(rows: list[dict], defense: str, attack: str, key: str = "robust_acc") -> str:
    """``key`` of the (defense, attack) row, or "n/a" when the run has no such row."""
    return next((r[key] for r in rows if r["defense"] == defense and r["attack"] == attack), "n/a")
