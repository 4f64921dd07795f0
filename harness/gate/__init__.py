"""The regression gate (``harness check``): compare a results.csv with a committed baseline.

``read`` validates the two files, keys their rows by content and refuses incomparable files; ``samples`` finds the
per-sample verdicts of the paired test; ``verdict`` judges each cell (``compare``); ``output`` renders the
outcome as text, JSON, JUnit XML or GitHub annotations.  Exit codes: 0 no regression, 3 a regression (or a
masking flag with ``fail_on_flags``), 2 bad input or incomparable files (``UsageError``).
"""
from __future__ import annotations

from .verdict import Line, Outcome, compare

__all__ = ["Line", "Outcome", "compare", "run_check"]


def run_check(baseline: str, results: str, tolerance: float = 1.0, *, alpha: float = 0.05, strict: bool = False,
              allow_seed_change: bool = False, allow_model_change: bool = False, fail_on_flags: bool = False,
              fmt: str = "text", report: str | None = None) -> int:
    """``harness check``: print the outcome in ``fmt``, write the JSON ``report``, append the Markdown summary to
    ``$GITHUB_STEP_SUMMARY`` (format github); the exit code."""
    import os
    from pathlib import Path

    from harness.core.errors import UsageError

    from .output import FORMATS, summary_markdown, to_json

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if report is not None:
        _probe(Path(report))
    out = compare(baseline, results, tolerance, alpha, strict, allow_seed_change, allow_model_change, fail_on_flags)
    if report is not None:
        from harness.report import write_atomic

        path = Path(report)
        try:
            write_atomic(path.parent if str(path.parent) else Path("."), {path.name: to_json(out)})
        except OSError as err:
            raise UsageError(f"--report {report}: cannot write ({err.strerror or err})") from None
    print(FORMATS[fmt](out), end="" if fmt in ("json", "junit") else "\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if fmt == "github" and summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(summary_markdown(out))
        except OSError as err:
            raise UsageError(f"$GITHUB_STEP_SUMMARY {summary}: cannot append ({err.strerror or err})") from None
    return out.exit_code


def _probe(path) -> None:
    """Refuse a --report path that cannot be written, before any work (a trial write, not ``os.access``)."""
    from harness.writable import probe_writable

    if path.is_dir():
        from harness.core.errors import UsageError

        raise UsageError(f"--report {path}: is a folder")
    probe_writable(path.parent if str(path.parent) else path.cwd(), "--report")
