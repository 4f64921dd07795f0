"""Result pages generated from grids (``harness grid FILE --report-into PAGE``, ``harness/grid/pages.py``).

The checked-in pages under docs/results must equal a render of the committed grid results (reports/results/*.csv):
no number on a generated section is copied by hand.  A small grid run end to end checks what ``--report-into``
writes, that hand-written prose around a section survives a rerun, and the usage errors.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UsageError
from harness.grid import pages

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = """# A tiny grid for the pages test: 20 digits images, FGSM and PGD-2.
#   python -m harness grid tiny.toml --report-into docs/results/tiny.md
# Rows: seed.
[axes]
defense = ["none"]
attack = ["fgsm", "pgd_linf"]
seed = [0, 1]
[settings]
n = 20
set = ["pgd_linf.steps=2"]
"""


def test_checked_in_pages_equal_a_render_of_the_committed_results():
    assert pages.stale_pages(REPO) == []
    text = "".join(p.read_text() for p in (REPO / pages.PAGES).glob("*.md"))
    used = {m.group(1) for m in pages.SECTION.finditer(text)}
    assert used, "no generated section in docs/results"
    committed = {p.stem for p in (REPO / pages.DATA).glob("*.csv")}
    assert committed == {Path(g).stem for g in used}, "a committed results.csv that no page renders (or the reverse)"
    for grid in used:
        assert (REPO / grid).is_file()
    for m in pages.SECTION.finditer(text):  # a mark in a table is explained under it
        table = [line for line in m.group(0).splitlines() if line.startswith("|")]
        if any(" †" in line for line in table):
            assert "†: a gradient-masking check fired" in m.group(0), m.group(1)


def test_report_into_writes_the_csv_and_the_section_and_keeps_the_prose(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("tiny.toml").write_text(TINY)
    page = Path("docs/results/tiny.md")
    assert main(["grid", "tiny.toml", "--out", "out", "--quiet", "--report-into", str(page)]) == 0
    data = Path("reports/results/tiny.csv")
    assert data.read_bytes() == Path("out/results.csv").read_bytes()
    text = page.read_text()
    assert text.startswith("# Results: tiny\n")
    assert "A tiny grid for the pages test: 20 digits images, FGSM and PGD-2." in text
    assert "\n    python -m harness grid tiny.toml --report-into docs/results/tiny.md\n" in text  # a code line
    assert "[`reports/results/tiny.csv`](../../reports/results/tiny.csv)" in text
    with data.open(newline="") as fh:
        worst = [r for r in csv.DictReader(fh) if r["attack"] == "worst-case"]
    table = [line for line in text.splitlines() if line.startswith("| none")]
    assert len(table) == len(worst) == 2
    for line, row in zip(table, worst):  # seed, defense, clean, fgsm, pgd_linf, worst case
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == "none" and cells[2] == row["clean_acc"] and cells[-1] == row["robust_acc"]
    # prose around the section stays; the section is replaced, not appended again
    page.write_text("# Tiny\n\nHand-written text.\n\n" + text.split("\n", 2)[2] + "\nMore text.\n")
    assert main(["grid", "tiny.toml", "--out", "out", "--quiet", "--report-into", str(page)]) == 0
    again = page.read_text()
    assert again.startswith("# Tiny\n\nHand-written text.\n") and again.endswith("\nMore text.\n")
    assert again.count("<!-- begin grid tiny.toml") == 1
    assert pages.stale_pages(Path(".")) == []
    # a changed number in the committed CSV makes the page stale; the re-render restores the page
    lines = data.read_text().splitlines(keepends=True)
    k = next(i for i, line in enumerate(lines) if ",worst-case," in line)
    lines[k] = lines[k].replace(f",{worst[0]['clean_acc']},", ",12.34,", 1)
    data.write_text("".join(lines))
    assert pages.stale_pages(Path(".")) == [page]
    assert "12.34" in pages.render_section("tiny.toml", page)


def test_report_into_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("tiny.toml").write_text(TINY)
    assert main(["grid", "tiny.toml", "--out", "out", "--report-into", "page.txt"]) == 2
    assert main(["grid", "tiny.toml", "--dry-run", "--report-into", "page.md"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("harness: error: --report-into") for e in err)
    assert not Path("out").exists() and not Path("page.md").exists() and not Path("reports").exists()
    # results of cells the grid no longer has: a usage error, not a page of stale numbers
    Path("reports/results").mkdir(parents=True)
    Path("reports/results/tiny.csv").write_text("dataset,n,attack,cell\ndigits,20,worst-case,000000000000\n")
    with pytest.raises(UsageError, match="not a cell of tiny.toml"):
        pages.render_section("tiny.toml", Path("docs/results/tiny.md"))


def test_the_index_names_each_page_s_generated_sections():
    """docs/results/README.md's table lists, per page, exactly the grids rendered in it (its third column), so the
    index never calls a table generated that is not, nor misses one that is."""
    import re

    index = (REPO / pages.PAGES / "README.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        page = REPO / pages.PAGES / re.match(r"\[[^]]+\]\(([^)]+)\)", cells[0]).group(1)
        listed = set(re.findall(r"`([a-z0-9_]+)`", cells[2]))
        rendered = {Path(m.group(1)).stem for m in pages.SECTION.finditer(page.read_text())}
        assert listed == rendered, f"{page.name}: the index lists {sorted(listed)}, the page renders {sorted(rendered)}"
    assert {re.match(r"\| \[[^]]+\]\(([^)]+)\)", r).group(1) for r in rows} == \
        {p.name for p in (REPO / pages.PAGES).glob("*.md")} - {"README.md"}
