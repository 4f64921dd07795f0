"""The combined tables of a grid: results.csv (every row of every complete cell), results.md and results.tex.

results.csv: the rows of each complete cell in the order of the grid's cells (the product of the axes in the
order of the file, the first axis slowest), each cell's rows in its own order; the columns of DESIGN.md first
(``harness.report.COLUMNS`` + ``EXTRA_COLUMNS``), then any further column a cell has (detector, certified), then
``cell`` (the cell id, its folder under cells/) and one column per ``set`` axis.

results.md and results.tex hold the same paper-style table: one line per (cell, eps) -- the cell axes that vary
in the grid label it -- with the clean accuracy, the robust accuracy under each attack and the worst case per
sample over the cell's attacks; with ``[grid] ci = true`` each number carries its exact 95% interval.  The .tex
is a booktabs ``tabular`` to ``\\input`` (``\\usepackage{booktabs}``).  A detector's cells give both readings of a
rejected adversarial image, ``not defended / defended``.
"""
from __future__ import annotations

from tabulate import tabulate

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


def paper_table(grid: Grid, rows: list[dict]) -> tuple[list[str], list[list[str]], int]:
    """(header, body, number of label columns): one line per (cell, eps), closed by its worst-case row."""
    by_id = {c.id: c for c in grid.cells}
    axes = grid.varying
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"] != "worst-case"))
    threats = {a: {r["threat"] for r in rows if r["attack"] == a} for a in attacks}
    several_eps = len({r["eps"] for r in rows if r["attack"] == "worst-case"}) > 1
    head = [a.replace("set.", "") for a in axes] + (["eps"] if several_eps else []) + ["Clean"]
    head += [f"{a} ({next(iter(threats[a]))})" if len(threats[a]) == 1 else a for a in attacks] + ["Worst case"]
    body, group = [], {}
    for r in rows:
        group[r["attack"]] = r
        if r["attack"] != "worst-case":
            continue
        labels = by_id[r["cell"]].labels
        line = [labels.get(a, "") for a in axes] + ([r["eps"]] if several_eps else [])
        line.append(_acc(r, "clean", grid.ci))
        line += [_acc(group[a], "robust", grid.ci) if a in group else "" for a in attacks]
        line.append(_acc(r, "robust", grid.ci))
        body.append(line)
        group = {}
    return head, body, len(axes) + several_eps


def _acc(r: dict, kind: str, ci: bool) -> str:
    """``value [low, high]``; a detector's robust cell gives both readings, ``not defended / defended`` (a rejected
    adversarial image counted as not defended, then as defended: ``robust_acc_reject_defended``)."""
    value = r[f"{kind}_acc"]
    low, high = r.get(f"{kind}_ci_low", ""), r.get(f"{kind}_ci_high", "")
    text = f"{value} [{low}, {high}]" if ci and low != "" and value != "" else value
    second = r.get("robust_acc_reject_defended", "") if kind == "robust" else ""
    return f"{text} / {second}" if second != "" else text


def _caption(grid: Grid, rows: list[dict], done: int | None) -> str:
    ns = sorted({r["n"] for r in rows}, key=int)
    progress = "" if done is None or done == len(grid.cells) else (
        f" Only {done} of {len(grid.cells)} cells are complete: rerun the grid to finish it.")
    return (f"Accuracy in percent on {'/'.join(ns)} samples per cell; {len(grid.cells)} cell{'s' * (len(grid.cells) != 1)}. Robust accuracy is the "
            "worst case per sample over the attacks of a cell; an adversarial image outside the budget of the original "
            f"image counts as defended.{' Brackets: exact 95% intervals.' if grid.ci else ''}"
            f"{DETECTOR_NOTE if any(r.get('robust_acc_reject_defended', '') != '' for r in rows) else ''}{progress}")


DETECTOR_NOTE = (" a / b (detectors): robust accuracy with a rejected adversarial image counted as not defended / as "
                 "defended.")


def to_markdown(grid: Grid, rows: list[dict], done: int) -> str:
    head, body, _ = paper_table(grid, rows)
    full = grid.varying + ["attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc",
                                        "robust_ci_low", "robust_ci_high", "invalid", "cell"]
    by_id = {c.id: c for c in grid.cells}
    listing = [[by_id[r["cell"]].labels.get(c, "") if c in grid.axes else r.get(c, "") for c in full] for r in rows]
    return "\n".join([f"# Grid: {grid.name}", "", f"From `{grid.path}`. {_caption(grid, rows, done)}", "",
                      tabulate(body, headers=head, tablefmt="github", disable_numparse=True), "", "## All rows", "",
                      tabulate(listing, headers=full, tablefmt="github", disable_numparse=True), ""])


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(grid: Grid, rows: list[dict]) -> str:
    """The paper table as a booktabs tabular: label columns left-aligned, numbers right-aligned."""
    head, body, n_labels = paper_table(grid, rows)

    def cell(text: str) -> str:
        if grid.ci and " [" in text:
            value, interval = text.split(" ", 1)
            return f"{value} {{\\scriptsize {tex_escape(interval)}}}"
        return tex_escape(text)

    spec = "l" * n_labels + "r" * (len(head) - n_labels)
    lines = [f"% harness grid {grid.path}: {_caption(grid, rows, None)}",
             "% needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(tex_escape(h) for h in head) + " \\\\", "\\midrule"]
    lines += [" & ".join(cell(v) for v in line) + " \\\\" for line in body]
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)
