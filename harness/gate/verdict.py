"""The gate's verdict: which cells fell below the baseline, noise taken into account.

A metric (clean_acc, robust_acc) of a cell REGRESSES when it fell by more than ``tolerance`` points AND the fall is
significant at ``alpha`` (``harness.significance``): the exact McNemar test on the per-sample verdicts when both
files kept them (the same samples: equal n and labels), else the two Clopper-Pearson intervals.  With ``strict``
the point threshold alone decides (the gate before noise-aware verdicts).  A baseline cell the results lack is
MISSING, which fails the gate too; cells only the results have are new and not judged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.core.errors import UsageError
from harness.significance import ALPHA, count, fell_unpaired, intervals, mcnemar_p, separation_level

from .read import METRICS, check_comparable, index, key_columns, label, read_table
from .samples import Samples

EPS = 1e-9


@dataclass
class Line:
    cell: str
    key: dict
    metric: str
    baseline: float | None = None
    now: float | None = None
    test: str = ""  # mcnemar | clopper-pearson | threshold
    p_value: float | None = None
    lost: int | None = None  # McNemar's discordant samples: robust before, not now ...
    gained: int | None = None  # ... and the reverse
    ci_baseline: tuple | None = None
    ci_now: tuple | None = None
    status: str = "ok"  # ok | within noise | REGRESSION | MISSING

    @property
    def change(self) -> float | None:
        return None if self.baseline is None or self.now is None else self.now - self.baseline

    @property
    def failed(self) -> bool:
        return self.status in ("REGRESSION", "MISSING")


@dataclass
class Outcome:
    baseline: str
    results: str
    tolerance: float
    alpha: float
    strict: bool
    fail_on_flags: bool
    lines: list[Line] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)  # (cell, flags) of the results' flagged rows
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[Line]:
        return [ln for ln in self.lines if ln.failed]

    @property
    def ok(self) -> bool:
        return not self.regressed and not (self.fail_on_flags and self.flags)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 3

    @property
    def level(self) -> float:
        return separation_level(self.alpha)


def compare(baseline: str, results: str, tolerance: float = 1.0, alpha: float = ALPHA, strict: bool = False,
            allow_seed_change: bool = False, allow_model_change: bool = False, fail_on_flags: bool = False) -> Outcome:
    """Judge ``results`` against ``baseline`` (paths of results.csv files or their folders)."""
    if not tolerance >= 0:
        raise UsageError(f"--tolerance must be >= 0, got {tolerance}")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    base, now = read_table(baseline, "baseline"), read_table(results, "results")
    cols = key_columns(base, now, allow_model_change)
    b_idx, n_idx = index(base, cols, "baseline"), index(now, cols, "results")
    pairs = [(b_idx[k], n_idx[k]) for k in b_idx if k in n_idx]
    if not pairs:
        raise UsageError(f"not comparable: no cell of the baseline {base.path} is in the results {now.path} "
                         f"(keyed by {', '.join(cols)})")
    out = Outcome(str(base.path), str(now.path), tolerance, alpha, strict, fail_on_flags)
    out.notes = check_comparable(base, now, pairs, allow_seed_change, allow_model_change, cols)
    b_samples, n_samples = Samples(base.path), Samples(now.path)
    for k, brow in b_idx.items():
        key = dict(zip(cols, k))
        if k not in n_idx:
            out.lines.append(Line(label(brow, cols), key, "-", status="MISSING"))
            continue
        for metric in METRICS:
            out.lines.append(judge(brow, n_idx[k], metric, key, out, b_samples, n_samples))
    out.flags = [(label(r), r["flags"]) for r in now.rows if r.get("flags", "").strip()]
    return out


def judge(brow: dict, nrow: dict, metric: str, key: dict, out: Outcome, b_samples: Samples, n_samples: Samples) -> Line:
    b, n = float(brow[metric]), float(nrow[metric])
    nb, nn = int(brow["n"]), int(nrow["n"])
    line = Line(label(brow, list(key)), key, metric, b, n)
    line.ci_baseline, line.ci_now = intervals(count(b, nb), nb, count(n, nn), nn, out.alpha)
    beyond = b - n > out.tolerance + EPS
    if out.strict:
        line.test = "threshold"
        line.status = "REGRESSION" if beyond else "ok"
        return line
    paired = _paired(brow, nrow, metric, b_samples, n_samples)
    if paired is not None:
        line.test, (line.lost, line.gained) = "mcnemar", paired
        line.p_value = mcnemar_p(*paired)
        significant = line.p_value < out.alpha
    else:
        line.test = "clopper-pearson"
        significant = fell_unpaired(count(b, nb), nb, count(n, nn), nn, out.alpha)
    line.status = "REGRESSION" if beyond and significant else "within noise" if beyond else "ok"
    return line


def _paired(brow: dict, nrow: dict, metric: str, b_samples: Samples, n_samples: Samples) -> tuple[int, int] | None:
    """(lost, gained) over the same samples, or None when either side lacks them."""
    vb, vn = b_samples.vector(brow, metric), n_samples.vector(nrow, metric)
    if vb is None or vn is None:
        return None
    (lb, rb), (ln, rn) = vb, vn
    if lb != ln:
        raise UsageError(f"not comparable: {label(brow)}: the per-sample labels of the two runs differ "
                         "(not the same data)")
    lost = sum(1 for x, y in zip(rb, rn) if x and not y)
    gained = sum(1 for x, y in zip(rb, rn) if y and not x)
    return lost, gained
