"""The combined tables of a grid: results.csv (every row of every complete cell), results.md and results.tex.

results.csv: the rows of each complete cell in the order of the grid's cells (the product of the axes in the
order of the file, the first axis slowest), each cell's rows in its own order; the columns of DESIGN.md first
(``harness.report.COLUMNS`` + ``EXTRA_COLUMNS``), then any further column a cell has (detector, certified), then
``cell`` (the cell id, its folder under cells/) and one column per ``set`` axis.

results.md and results.tex hold the same paper-style table: one line per (cell, eps) -- the cell axes that vary
in the grid label it -- with the clean accuracy, the robust accuracy under each attack and the worst case per
sample over the cell's attacks; with ``[grid] ci = true`` each number carries its exact 95% interval.  A detector's
cells give both readings of a rejected adversarial image, ``not defended / defended``; a number whose row carries
a gradient-masking flag (``harness.flags``, the ``flags`` column) is marked with a dagger, and results.md lists
the flags.  results.md shows the ids and the two decimals of results.csv.  results.tex is paper-ready: a booktabs
``table`` to ``\\input`` (``\\usepackage{booktabs}``) with ``\\caption`` and ``\\label`` (``[grid] caption``,
``[grid] label``), display names (``harness.display``, overridden by the grid's ``[labels]``), and numbers rounded
to the precision of their interval (``[grid] decimals`` fixes it), the interval as ``\\pm`` half-width.
"""
from __future__ import annotations

import math
import re

from tabulate import tabulate

from harness.display import decimals, display
from harness.report import COLUMNS, EXTRA_COLUMNS, to_csv

from .spec import Grid


def combined_rows(grid: Grid, done: list) -> tuple[list[dict], list[str]]:
    """``done``: (cell, its results.csv rows) in grid order -> (rows with cell and set columns, columns)."""
    rows, extra = [], []
    for cell, cell_rows in done:
        for r in cell_rows:
            extra += [k for k in r if k not in COLUMNS and k not in EXTRA_COLUMNS and k not in extra]
            rows.append({**r, "cell": cell.id, **{a: cell.labels.get(a, "") for a in grid.set_axes}})
    extra = [k for k in extra if k != "cell" and k not in grid.set_axes]
    return rows, COLUMNS + EXTRA_COLUMNS + extra + ["cell"] + grid.set_axes


def to_csv_text(rows: list[dict], columns: list[str]) -> str:
    return to_csv(rows, columns)


def paper_table(grid: Grid, rows: list[dict], number=None, name=str) -> tuple[list[str], list[list[str]], int]:
    """(header, body, number of label columns): one line per (cell, eps), closed by its worst-case row.
    ``number(row, kind)`` formats an accuracy (default: results.md's); ``name`` shows an id (default: as it is)."""
    number = number or (lambda r, kind: _acc(r, kind, grid.ci))
    by_id = {c.id: c for c in grid.cells}
    axes = grid.varying
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"] != "worst-case"))
    threats = {a: {r["threat"] for r in rows if r["attack"] == a} for a in attacks}
    several_eps = len({r["eps"] for r in rows if r["attack"] == "worst-case"}) > 1
    head = [name(a.replace("set.", "")) for a in axes] + (["eps"] if several_eps else []) + ["Clean"]
    head += [f"{name(a)} ({next(iter(threats[a]))})" if len(threats[a]) == 1 else name(a) for a in attacks]
    head += ["Worst case"]
    body, group = [], {}
    for r in rows:
        group[r["attack"]] = r
        if r["attack"] != "worst-case":
            continue
        labels = by_id[r["cell"]].labels
        line = [name(labels.get(a, "")) for a in axes] + ([r["eps"]] if several_eps else [])
        line.append(number(r, "clean"))
        line += [number(group[a], "robust") if a in group else "" for a in attacks]
        line.append(number(r, "robust"))
        body.append(line)
        group = {}
    return head, body, len(axes) + several_eps


FLAG_MARK = " †"


def _acc(r: dict, kind: str, ci: bool) -> str:
    """``value [low, high]``; a detector's robust cell gives both readings, ``not defended / defended`` (a rejected
    adversarial image counted as not defended, then as defended: ``robust_acc_reject_defended``); a robust cell
    whose row carries a gradient-masking flag is marked ``†``."""
    value = r[f"{kind}_acc"]
    low, high = r.get(f"{kind}_ci_low", ""), r.get(f"{kind}_ci_high", "")
    text = f"{value} [{low}, {high}]" if ci and low != "" and value != "" else value
    second = r.get("robust_acc_reject_defended", "") if kind == "robust" else ""
    text = f"{text} / {second}" if second != "" else text
    return text + FLAG_MARK if kind == "robust" and r.get("flags", "") else text


def _flagged(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("flags", "")]


def footer(grid: Grid, rows: list[dict], done: int | None) -> str:
    """The sentence under a grid's table (results.md, a results page's section): samples and cells, how robust
    accuracy reads, the marks the table uses (intervals, a detector's a / b, a masking flag's †), and how many cells
    are complete (``done``; None: not said)."""
    ns = sorted({r["n"] for r in rows}, key=int)
    progress = "" if done is None or done == len(grid.cells) else (
        f" Only {done} of {len(grid.cells)} cells are complete: rerun the grid to finish it.")
    flags = " †: a gradient-masking check fired on this number (harness.flags)." if _flagged(rows) else ""
    return (f"Accuracy in percent on {'/'.join(ns)} samples per cell; {len(grid.cells)} cell{'s' * (len(grid.cells) != 1)}. Robust accuracy is the "
            "worst case per sample over the attacks of a cell; an adversarial image outside the budget of the original "
            f"image counts as defended.{' Brackets: exact 95% intervals.' if grid.ci else ''}"
            f"{DETECTOR_NOTE if any(r.get('robust_acc_reject_defended', '') != '' for r in rows) else ''}{flags}{progress}")


DETECTOR_NOTE = (" a / b (detectors): robust accuracy with a rejected adversarial image counted as not defended / as "
                 "defended.")


def to_markdown(grid: Grid, rows: list[dict], done: int) -> str:
    head, body, _ = paper_table(grid, rows)
    full = grid.varying + ["attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc",
                                        "robust_ci_low", "robust_ci_high", "invalid", "cell"]
    by_id = {c.id: c for c in grid.cells}
    listing = [[by_id[r["cell"]].labels.get(c, "") if c in grid.axes else r.get(c, "") for c in full] for r in rows]
    flagged = _flagged(rows)
    warnings = ["## Masking flags", "", *[f"- **Warning:** gradient masking? cell {r['cell']}: {r['defense']} / "
                                          f"{r['attack']} (eps {r['eps']}): {r['flags']}" for r in flagged], ""]
    return "\n".join([f"# Grid: {grid.name}", "", f"From `{grid.path}`. {footer(grid, rows, done)}", "",
                      tabulate(body, headers=head, tablefmt="github", disable_numparse=True), "",
                      *(warnings if flagged else []), "## All rows", "",
                      tabulate(listing, headers=full, tablefmt="github", disable_numparse=True), ""])


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _half(r: dict, kind: str) -> float | None:
    low, high = _float(r.get(f"{kind}_ci_low")), _float(r.get(f"{kind}_ci_high"))
    return (high - low) / 2 if low is not None and high is not None else None


def table_decimals(grid: Grid, rows: list[dict]) -> int:
    """``[grid] decimals``, else the precision of the table's widest 95% interval (``harness.display.decimals``):
    one precision for every number, and none finer than its least certain number deserves."""
    if "decimals" in grid.head:
        return grid.head["decimals"]
    halves = [h for r in rows for k in ("clean", "robust") if (h := _half(r, k)) is not None]
    return decimals(max(halves) if halves else math.nan)


def tex_number(r: dict, kind: str, dec: int, ci: bool) -> str:
    r"""An accuracy as results.tex prints it: ``dec`` decimals, ``$\pm$ half-width`` of its 95% interval with
    ``ci``, both detector readings, ``$^\dagger$`` when its row carries a masking flag."""
    value = _float(r.get(f"{kind}_acc"))
    if value is None:
        return ""
    half = _half(r, kind)
    text = f"{value:.{dec}f}"
    if ci and half is not None:
        text += f" {{\\scriptsize $\\pm$ {half:.{dec}f}}}"
    second = _float(r.get("robust_acc_reject_defended")) if kind == "robust" else None
    if second is not None:
        text += f" / {second:.{dec}f}"
    return text + ("$^\\dagger$" if kind == "robust" and r.get("flags", "") else "")


def _float(text) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def tex_label(grid: Grid) -> str:
    return grid.head.get("label") or "tab:" + re.sub(r"[^A-Za-z0-9:-]+", "-", grid.name).strip("-")


def to_latex(grid: Grid, rows: list[dict]) -> str:
    """The paper table as a booktabs ``table``: a caption (``[grid] caption``, TeX as written, else the grid's own
    words) and a label (``[grid] label``, else ``tab:<grid name>``), display names (``harness.display``, overridden
    by the grid's ``[labels]``), label columns left-aligned, numbers right-aligned and rounded to their interval."""
    dec = table_decimals(grid, rows)
    head, body, n_labels = paper_table(grid, rows, number=lambda r, kind: tex_number(r, kind, dec, grid.ci),
                                       name=lambda t: display(t, grid.names))
    spec = "l" * n_labels + "r" * (len(head) - n_labels)
    rounding = (f"Numbers to {dec} decimals" if "decimals" in grid.head else
                f"Numbers to {dec} decimal{'s' * (dec != 1)}, the precision of the widest exact 95% interval")
    flag_note = " $^\\dagger$: a gradient-masking check fired on this number." if _flagged(rows) else ""
    caption = grid.head["caption"] + flag_note if "caption" in grid.head else tex_escape(
        f"{footer(grid, rows, None).replace(' Brackets: exact 95% intervals.', '')} {rounding}"
        f"{'; ±: half the width of the exact 95% interval' if grid.ci else ''}.")
    caption = caption.replace("†", "$^\\dagger$").replace("±", "$\\pm$")
    lines = [f"% harness grid {grid.path}", "% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering",
             f"\\caption{{{caption}}}", f"\\label{{{tex_label(grid)}}}",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(tex_escape(h) for h in head) + " \\\\",
             "\\midrule"]
    lines += [" & ".join([tex_escape(v) for v in line[:n_labels]] + line[n_labels:]) + " \\\\" for line in body]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)
