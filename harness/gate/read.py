"""Reading the two results files of the gate: validation, the row key, and whether the two files are comparable.

A row is keyed by (dataset, defense, attack, threat, norm, eps) -- never by the model's name or file stem.  A file
of several models (a grid with a model axis), seeds or ``set.*`` values adds what varies to the key: the model's
``model_sha256`` (its ``model`` name where either file lacks the hash, or with ``--allow-model-change``), ``seed``,
and each ``set.KEY`` column.  Two rows of one file with the same key are an error.

Matched rows must describe the same experiment: ``IDENTITY`` columns (model_sha256, data_fingerprint, subset, n,
seed) must agree; ``seed`` may differ with ``allow_seed_change``, ``model_sha256`` with ``allow_model_change``.  A
column missing from both files (an older results.csv) is not compared; a column only one file has makes them
incomparable.  Every refusal is a ``UsageError`` (exit 2) naming the reason.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UsageError

KEY = ("dataset", "defense", "attack", "threat", "norm", "eps")
METRICS = ("clean_acc", "robust_acc")
IDENTITY = ("model_sha256", "data_fingerprint", "subset", "n", "seed")
REQUIRED = KEY + METRICS + ("n",)


@dataclass
class Table:
    path: Path
    columns: list[str]
    rows: list[dict]

    def has(self, column: str) -> bool:
        return column in self.columns

    def values(self, column: str) -> set[str]:
        return {r.get(column, "") for r in self.rows}


def resolve(path: str) -> Path:
    """A results.csv, or a run or grid folder holding one."""
    p = Path(path)
    if p.is_dir() and (p / "results.csv").is_file():
        return p / "results.csv"
    if not p.is_file():
        raise UsageError(f"{path}: no such results file")
    return p


def read_table(path: str, role: str) -> Table:
    """A validated results file: the required columns, at least one row, every accuracy a number in [0, 100]."""
    p = resolve(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise UsageError(f"{role} {p}: not a results.csv (missing column {missing[0]})")
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f"{role} {p}: not a readable CSV ({err})") from None
    if not rows:
        raise UsageError(f"{role} {p}: no rows (a gate that checks nothing would pass)")
    for line, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise UsageError(f"{role} {p} line {line}: wrong number of fields")
        for metric in METRICS:
            accuracy(row[metric], f"{role} {p} line {line}: {metric}")
        n = row["n"].strip()
        if not n.isdigit() or int(n) < 1:
            raise UsageError(f"{role} {p} line {line}: n {row['n']!r} is not a positive integer")
    return Table(p, columns, rows)


def accuracy(text: str, where: str) -> float:
    """An accuracy in percent: a finite number in [0, 100]; anything else is a ``UsageError``."""
    if text is None or not text.strip():
        raise UsageError(f"{where} is blank")
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{where} is {text.strip()}")
    if not 0 <= value <= 100:
        raise UsageError(f"{where} {text.strip()} is outside [0, 100]")
    return value


def key_columns(base: Table, now: Table, allow_model_change: bool) -> list[str]:
    """KEY, plus the model identity, seed and set.* columns that take several values in either file."""
    cols = list(KEY)
    both = base.has("model_sha256") and now.has("model_sha256") and not allow_model_change
    model = "model_sha256" if both else "model"
    if model in base.columns and model in now.columns and (len(base.values(model)) > 1 or len(now.values(model)) > 1):
        cols.append(model)
    sets = [c for c in base.columns if c.startswith("set.") and c in now.columns]
    for c in ["seed", *sets]:
        if c in base.columns and c in now.columns and (len(base.values(c)) > 1 or len(now.values(c)) > 1):
            cols.append(c)
    return cols


def index(table: Table, cols: list[str], role: str) -> dict[tuple, dict]:
    out = {}
    for row in table.rows:
        k = tuple(row.get(c, "") for c in cols)
        if k in out:
            raise UsageError(f"{role} {table.path}: two rows for the same cell ({label(row, cols)})")
        out[k] = row
    return out


def label(row: dict, cols=KEY) -> str:
    """The cell as the tables show it: defense/attack/threat norm eps, plus the further key columns ``cols``."""
    extra = "".join(f" {c}={row[c][:12] if c == 'model_sha256' else row[c]}" for c in cols if c not in KEY)
    return f"{row['defense']}/{row['attack']}/{row['threat']} {row['norm']} {row['eps']}{extra}"


def check_comparable(base: Table, now: Table, pairs: list[tuple[dict, dict]], allow_seed_change: bool,
                     allow_model_change: bool, cols=KEY) -> list[str]:
    """Refuse (``UsageError``) when the matched rows differ in an ``IDENTITY`` column; the notes of allowed changes."""
    notes = []
    allowed = {"seed": ("--allow-seed-change", allow_seed_change),
               "model_sha256": ("--allow-model-change", allow_model_change)}
    for col in IDENTITY:
        if base.has(col) != now.has(col):
            only, other = (base, now) if base.has(col) else (now, base)
            raise UsageError(f"not comparable: only {only.path} has a {col} column ({other.path} is from an older "
                             "version: regenerate it)")
        if not base.has(col):
            continue
        for b, n in pairs:
            if b[col] != n[col]:
                flag, ok = allowed.get(col, ("", False))
                what = (f"{label(b, cols)}: {col} {b[col] or '(blank)'} in the baseline, "
                        f"{n[col] or '(blank)'} in the results")
                if not ok:
                    hint = f" (pass {flag} if that is intended)" if flag else ""
                    raise UsageError(f"not comparable: {what}{hint}")
                notes.append(f"{col} changed ({flag}): {b[col][:16]} -> {n[col][:16]}")
                break
    return notes
