"""The gate's outputs: a text table, JSON, JUnit XML and GitHub Actions annotations (with a Markdown summary).

JSON (``--format json`` and ``--report FILE``)::

    {"verdict": "ok" | "regression", "exit_code": 0 | 3, "baseline": ..., "results": ..., "tolerance": ...,
     "alpha": ..., "strict": ..., "interval_level": ..., "fail_on_flags": ..., "notes": [...],
     "cells": [{"cell", "key": {...}, "metric", "baseline", "now", "change", "test", "p_value", "lost", "gained",
                "ci_baseline": [lo, hi], "ci_now": [lo, hi], "status"}],
     "flags": [{"cell", "flags"}], "regressions": <number of failed lines>}

JUnit: one ``testsuite`` ("harness check") with a ``testcase`` per judged (cell, metric) and a ``failure`` on each
regressed or missing one, and one per flagged cell (a ``failure`` with ``--fail-on-flags``, else ``system-out``).
GitHub: one ``::error`` line per regressed cell, one ``::warning`` per flagged cell, then the text table.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tabulate import tabulate

from .verdict import Line, Outcome


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _evidence(ln: Line) -> str:
    if ln.test == "mcnemar":
        return f"p={ln.p_value:.3g} (-{ln.lost}/+{ln.gained})"
    if ln.test in ("clopper-pearson", "threshold") and ln.ci_now is not None:
        return f"[{ln.ci_baseline[0]:.1f}, {ln.ci_baseline[1]:.1f}] -> [{ln.ci_now[0]:.1f}, {ln.ci_now[1]:.1f}]"
    return ""


def verdict_line(out: Outcome) -> str:
    rule = (f"strict: a fall > {out.tolerance:g} points fails" if out.strict else
            f"a fall fails when > {out.tolerance:g} points and significant at alpha {out.alpha:g}")
    head = "no regression" if out.ok else "REGRESSION"
    if out.ok is False and not out.regressed:
        head = "FLAGGED (--fail-on-flags)"
    extra = f"; {len(out.flags)} flagged cell{'s' * (len(out.flags) != 1)}" if out.flags else ""
    return f"{head} ({len(out.regressed)} failed of {len(out.lines)} checks; {rule}{extra})"


def text(out: Outcome) -> str:
    rows = [[ln.cell, ln.metric, _num(ln.baseline), _num(ln.now), "" if ln.change is None else f"{ln.change:+.2f}",
             ln.test, _evidence(ln), ln.status] for ln in out.lines]
    parts = [tabulate(rows, headers=["cell", "metric", "baseline", "now", "change", "test", "p / intervals", "status"],
                      tablefmt="github", disable_numparse=True)]
    if any(ln.test == "clopper-pearson" for ln in out.lines):
        parts.append(f"intervals: exact Clopper-Pearson at {100 * out.level:.1f}%, whose separation is a one-sided "
                     f"test at alpha {out.alpha:g}; p: exact one-sided McNemar on the samples' flips (-lost/+gained)")
    parts += [f"warning: masking flag on {cell}: {flags}" for cell, flags in out.flags]
    parts += [f"note: {n}" for n in out.notes]
    parts.append("\n" + verdict_line(out))
    return "\n".join(parts)


def as_dict(out: Outcome) -> dict:
    cells = [{"cell": ln.cell, "key": ln.key, "metric": ln.metric, "baseline": ln.baseline, "now": ln.now,
              "change": None if ln.change is None else round(ln.change, 4), "test": ln.test or None,
              "p_value": ln.p_value, "lost": ln.lost, "gained": ln.gained,
              "ci_baseline": list(ln.ci_baseline) if ln.ci_baseline else None,
              "ci_now": list(ln.ci_now) if ln.ci_now else None, "status": ln.status} for ln in out.lines]
    return {"verdict": "ok" if out.ok else "regression", "exit_code": out.exit_code, "baseline": out.baseline,
            "results": out.results, "tolerance": out.tolerance, "alpha": out.alpha, "strict": out.strict,
            "interval_level": round(out.level, 6), "fail_on_flags": out.fail_on_flags, "notes": out.notes,
            "cells": cells, "flags": [{"cell": c, "flags": f} for c, f in out.flags],
            "regressions": len(out.regressed)}


def to_json(out: Outcome) -> str:
    return json.dumps(as_dict(out), indent=2) + "\n"


def junit(out: Outcome) -> str:
    suite = ET.Element("testsuite", name="harness check", tests="0", failures="0", errors="0", skipped="0")
    tests = failures = 0
    for ln in out.lines:
        case = ET.SubElement(suite, "testcase", classname=f"robustness.{ln.key.get('dataset', '')}",
                             name=f"{ln.cell} {ln.metric}")
        tests += 1
        if ln.failed:
            failures += 1
            msg = (f"{ln.metric} {_num(ln.baseline)} -> {_num(ln.now)} ({ln.status}; {_evidence(ln)})"
                   if ln.status != "MISSING" else "the results have no row for this baseline cell")
            ET.SubElement(case, "failure", message=msg, type=ln.status).text = msg
    for cell, flags in out.flags:
        case = ET.SubElement(suite, "testcase", classname="robustness.flags", name=f"{cell} masking flags")
        tests += 1
        if out.fail_on_flags:
            failures += 1
            ET.SubElement(case, "failure", message=flags, type="flag").text = flags
        else:
            ET.SubElement(case, "system-out").text = f"masking flags: {flags}"
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    root = ET.Element("testsuites", name="harness check", tests=str(tests), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _escape(text: str) -> str:
    """GitHub workflow-command data: %, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github(out: Outcome) -> str:
    """One ``::error`` per regressed cell (its failed metrics together), one ``::warning`` per flagged cell."""
    by_cell: dict[str, list[Line]] = {}
    for ln in out.regressed:
        by_cell.setdefault(ln.cell, []).append(ln)
    lines = []
    for cell, lns in by_cell.items():
        what = "; ".join("missing from the results" if ln.status == "MISSING" else
                         f"{ln.metric} {_num(ln.baseline)} -> {_num(ln.now)} ({_evidence(ln)})" for ln in lns)
        lines.append(f"::error title=robustness regression::{_escape(f'{cell}: {what}')}")
    kind = "error" if out.fail_on_flags else "warning"
    lines += [f"::{kind} title=masking flag::{_escape(f'{cell}: {flags}')}" for cell, flags in out.flags]
    return "\n".join(lines + [text(out)])


def summary_markdown(out: Outcome) -> str:
    """The Markdown summary for ``$GITHUB_STEP_SUMMARY``."""
    rows = [[ln.cell, ln.metric, _num(ln.baseline), _num(ln.now), "" if ln.change is None else f"{ln.change:+.2f}",
             _evidence(ln), ("**" + ln.status + "**") if ln.failed else ln.status] for ln in out.lines]
    parts = [f"### Robustness gate: {'passed' if out.ok else 'FAILED'}", "", verdict_line(out), "",
             tabulate(rows, headers=["cell", "metric", "baseline", "now", "change", "p / intervals", "status"],
                      tablefmt="github", disable_numparse=True)]
    if out.flags:
        parts += ["", *[f"- :warning: masking flag on `{c}`: {f}" for c, f in out.flags]]
    return "\n".join(parts) + "\n\n"


FORMATS = {"text": text, "json": to_json, "junit": junit, "github": github}
