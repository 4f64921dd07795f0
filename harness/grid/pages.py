"""Result pages generated from grids: ``harness grid FILE.toml --report-into docs/results/PAGE.md``.

A page (``docs/results/*.md``) is prose written by hand around generated sections, one per grid::

    <!-- begin grid reports/grids/magnet_digits.toml: generated, do not edit (python -m harness.grid.pages) -->
    ...the grid file's leading comments, the table, where the numbers are...
    <!-- end grid reports/grids/magnet_digits.toml -->

A section is rendered from the grid's combined results as committed, ``reports/results/<grid stem>.csv`` (a copy of
the grid's ``results.csv``; paths relative to the repository root, where the command runs): the grid file's
leading comment block as caption, the paper-style table of ``harness.grid.tables.paper_table`` (one line per
cell and eps: clean accuracy, each attack, the worst case per sample), and a line saying how many samples and
cells it holds.  ``--report-into`` first runs the grid (resuming: complete cells are never recomputed), then
copies its ``results.csv`` to the committed place and rewrites the grid's section of the page (appended when the
page has none; the page is created when missing).  ``python -m harness.grid.pages`` re-renders every section of
every page from the committed CSVs (after a change of the table layout), ``--check`` only reports the pages that
differ (exit 1): ``tests/test_pages.py`` runs it, so a page always says what its committed CSV says.
"""
from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

from tabulate import tabulate

from harness.core.errors import UsageError

PAGES = Path("docs") / "results"
DATA = Path("reports") / "results"
BEGIN = "<!-- begin grid {}: generated, do not edit (python -m harness.grid.pages) -->"
END = "<!-- end grid {} -->"
SECTION = re.compile(r"<!-- begin grid (\S+): generated[^>]*-->\n.*?<!-- end grid \1 -->", re.S)


def data_path(grid_path: str | Path) -> Path:
    """Where a grid's combined results.csv is committed: ``reports/results/<stem>.csv``."""
    return DATA / f"{Path(grid_path).stem}.csv"


def check_page(page: str | Path) -> Path:
    page = Path(page)
    if page.suffix != ".md":
        raise UsageError(f"--report-into {page}: a page is a Markdown file (.md)")
    if page.exists() and not page.is_file():
        raise UsageError(f"--report-into {page}: not a file")
    return page


def caption(grid_path: Path) -> str:
    """The grid file's leading comment block as Markdown: text lines as paragraphs, lines indented by two or more
    spaces after the ``#`` (command lines) as a code block."""
    out, code = [], False
    for line in grid_path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].removeprefix(" ")
        is_code = text.startswith("  ")
        if is_code != code and out:
            out.append("")
        out.append("    " + text.strip() if is_code else text.strip())
        code = is_code
    return "\n".join(out).strip("\n")


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise UsageError(f"{path}: no such results file (run the grid with --report-into to write it)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def render_section(grid_path: str | Path, page: str | Path, root: Path = Path(".")) -> str:
    """The generated section of one grid, from its committed CSV; ``grid_path`` and ``page`` relative to ``root``."""
    from .spec import load_grid
    from .tables import footer, paper_table

    grid_path = Path(grid_path)
    grid = load_grid(root / grid_path)
    data = data_path(grid_path)
    rows = read_csv(root / data)
    ids = {c.id for c in grid.cells}
    stray = sorted({r.get("cell", "") for r in rows} - ids)
    if stray:
        raise UsageError(f"{data}: cell {stray[0]} is not a cell of {grid_path} (the grid changed: rerun it with "
                         f"--report-into)")
    done = len({r["cell"] for r in rows})
    head, body, _ = paper_table(grid, rows)
    up = Path(os.path.relpath(".", Path(page).parent))
    lines = [BEGIN.format(grid_path.as_posix()),
             f"Grid [`{grid_path.as_posix()}`]({(up / grid_path).as_posix()}), results "
             f"[`{data.as_posix()}`]({(up / data).as_posix()}); regenerate with "
             f"`python -m harness grid {grid_path.as_posix()} --report-into {Path(page).as_posix()}`.", "",
             caption(root / grid_path), "",
             tabulate(body, headers=head, tablefmt="github", disable_numparse=True), "",
             footer(grid, rows, done),
             END.format(grid_path.as_posix())]
    return "\n".join(lines)


def put_section(text: str, grid_path: str, section: str) -> str:
    """``text`` with the section of ``grid_path`` replaced by ``section`` (appended when it has none)."""
    for m in SECTION.finditer(text):
        if m.group(1) == grid_path:
            return text[:m.start()] + section + text[m.end():]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def report_into(grid, page: str | Path) -> Path:
    """After ``harness grid``: commit the grid's results.csv to ``reports/results/`` and rewrite its section of
    ``page``."""
    from harness.report import write_atomic

    page = check_page(page)
    results = Path(grid.out) / "results.csv"
    if not results.is_file():
        raise UsageError(f"{results}: the grid wrote no results")
    data = data_path(grid.path)
    write_atomic(data.parent, {data.name: results.read_bytes()})
    section = render_section(grid.path, page)
    text = page.read_text() if page.exists() else f"# Results: {Path(grid.path).stem}\n"
    write_atomic(page.parent, {page.name: put_section(text, Path(grid.path).as_posix(), section)})
    return page


def stale_pages(root: Path = Path("."), write: bool = False) -> list[Path]:
    """The pages under ``docs/results`` whose generated sections differ from a render of the committed CSVs
    (rewritten when ``write``)."""
    stale = []
    for page in sorted((root / PAGES).glob("*.md")):
        text = page.read_text()
        rel = page.relative_to(root)
        new = SECTION.sub(lambda m: render_section(m.group(1), rel, root), text)
        if new != text:
            stale.append(rel)
            if write:
                from harness.report import write_atomic

                write_atomic(page.parent, {page.name: new})
    return stale


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.grid.pages [--check]``: re-render every page from the committed CSVs."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print("usage: python -m harness.grid.pages [--check]", file=sys.stderr)
        return 2
    try:
        stale = stale_pages(write=not argv)
    except UsageError as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    for page in stale:
        print(f"{page}: {'differs from a render of its results' if argv else 'rewritten'}", file=sys.stderr)
    return 1 if stale and argv else 0


if __name__ == "__main__":
    sys.exit(main())
