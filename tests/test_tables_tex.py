"""Paper-ready grid tables and figures (issue 25, item 6): results.tex with caption, label, booktabs, display names,
precision from the intervals, +- intervals, masking flags; figure legends in display names, no empty panels."""
from __future__ import annotations

import csv
import re
import shutil
import subprocess

import pytest

from harness.cli import main
from harness.display import decimals, display
from harness.grid.spec import load_grid
from harness.grid.store import write_combined

GRID = """
[grid]
ci = true
caption = "Bit-depth reduction on digits: robust accuracy (\\\\%)."
label = "tab:quant"
{extra}
[labels]
quantize = "Bit depth (8 levels)"
[axes]
model = ["digits_cnn"]
defense = ["none", "quantize"]
attack = ["pgd_linf", "bpda"]
eps = [0.05, 0.2]
[settings]
n = 40
"""


@pytest.fixture(scope="module")
def quant(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant")
    toml = folder / "quant.toml"
    toml.write_text(GRID.format(extra=""))
    assert main(["grid", str(toml), "--out", str(folder / "out"), "--quiet"]) == 0
    return folder


def parse_tex(tex: str) -> tuple[str, list[list[str]]]:
    """(column spec, cells of each row) of the table, after checking its structure: balanced environments and
    braces, a caption and a label inside the table, booktabs rules, every row as wide as the spec."""
    assert tex.count("{") - tex.count("\\{") == tex.count("}") - tex.count("\\}")
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    assert [e for k, e in envs if k == "begin"] == ["table", "tabular"]
    assert [e for k, e in envs if k == "end"] == ["tabular", "table"]
    table = tex.split("\\begin{table}", 1)[1]
    assert "\\caption{" in table and "\\label{" in table
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex).group(1)
    body = tex.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
    lines = [ln.strip() for ln in body.splitlines() if ln.strip() and ln.strip() != "\\midrule"]
    cells = [[c.strip() for c in re.split(r"(?<!\\)&", ln.removesuffix("\\\\"))] for ln in lines]
    assert all(ln.endswith("\\\\") for ln in lines) and all(len(c) == len(spec) for c in cells)
    return spec, cells


def test_results_tex_is_paper_ready(quant, tmp_path):
    tex = (quant / "out" / "results.tex").read_text()
    spec, cells = parse_tex(tex)
    assert "\\caption{Bit-depth reduction on digits: robust accuracy (\\%). $^\\dagger$: a gradient-masking" in tex
    assert "\\label{tab:quant}" in tex and "\\usepackage{booktabs}" in tex
    head = cells[0]
    assert head == ["Defense", "eps", "Clean", "PGD-Linf (white-box)", "BPDA (white-box)", "Worst case"]
    assert [c[0] for c in cells[1:]] == ["No defense"] * 2 + ["Bit depth (8 levels)"] * 2
    assert "pgd\\_linf" not in tex.split("\\toprule")[1] and "quantize" not in tex.split("\\toprule")[1]
    numbers = [c for row in cells[1:] for c in row[2:]]
    assert all(re.fullmatch(r"\d+ \{\\scriptsize \$\\pm\$ \d+\}(\$\^\\dagger\$)?", c) for c in numbers), numbers
    flagged = {(row[0], row[1]): row[3].endswith("$^\\dagger$") for row in cells[1:]}
    assert flagged == {("No defense", "0.05"): False, ("No defense", "0.2"): False,
                       ("Bit depth (8 levels)", "0.05"): False, ("Bit depth (8 levels)", "0.2"): True}
    if shutil.which("pdflatex"):  # compile it where a TeX engine exists
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex
                       + "\n\\end{document}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path, capture_output=True)
        assert done.returncode == 0, done.stdout[-2000:]


def test_the_flags_reach_the_combined_csv_and_md(quant):
    rows = list(csv.DictReader(open(quant / "out" / "results.csv")))
    got = {(r["defense"], r["attack"], r["eps"]): r["flags"] for r in rows}
    assert set(got["quantize", "pgd_linf", "0.2"].split("; ")) == {"bpda-eot-stronger", "flat-in-eps"}
    assert got["none", "pgd_linf", "0.2"] == "" and got["quantize", "bpda", "0.2"] == ""
    md = (quant / "out" / "results.md").read_text()
    assert "## Masking flags" in md and "quantize / pgd_linf (eps 0.2): bpda-eot-stronger" in md
    assert re.search(r"\| quantize .*\| 0\.2 .*†", md)
    assert "*Figure: Robust accuracy (%) vs eps" in md and "95% Clopper-Pearson" in md


def test_decimals_can_be_asked_for(quant):
    toml = quant / "quant.toml"
    toml.write_text(GRID.format(extra="decimals = 2"))
    grid = load_grid(toml, str(quant / "out"))
    assert write_combined(grid, quant / "out") == 2  # the same cells: nothing recomputed
    _, cells = parse_tex((quant / "out" / "results.tex").read_text())
    assert all(re.fullmatch(r"\d+\.\d\d \{\\scriptsize \$\\pm\$ \d+\.\d\d\}(\$\^\\dagger\$)?", c)
               for row in cells[1:] for c in row[2:])


def test_decimals_follow_the_interval_width():
    assert [decimals(h) for h in (14.0, 10.0, 5.3, 3.1, 0.98, 0.3, 0.04)] == [0, 0, 1, 1, 2, 2, 2]
    assert decimals(float("nan")) == 2 and decimals(0.0) == 2
    assert display("pgd_linf") == "PGD-Linf" and display("pgd_linf", {"pgd_linf": "PGD"}) == "PGD"
    assert display("my_label") == "my_label"


def test_grid_legends_use_display_names_and_empty_panels_are_dropped(tmp_path, monkeypatch):
    from harness.figures import grid_figures, plots

    drawn = []
    monkeypatch.setattr(plots, "robust_vs_eps", lambda panels, stem, **kw: drawn.append(panels))

    def row(cell, defense, attack, eps, acc):
        return {"cell": cell, "defense": defense, "attack": attack, "threat": "white-box", "norm": "linf",
                "eps": eps, "n": "50", "robust_acc": acc, "robust_ci_low": "", "robust_ci_high": "", "model": "m",
                "dataset": "digits"}

    rows = [row("a", "none", "pgd_linf", "0.1", "50"), row("a", "none", "pgd_linf", "0.2", "10"),
            row("a", "none", "square", "0.1", "60"),  # one budget only: a panel with nothing to draw vs eps
            row("a", "none", "worst-case", "0.1", "50"), row("a", "none", "worst-case", "0.2", "10"),
            row("b", "quantize", "pgd_linf", "0.1", "98"), row("b", "quantize", "pgd_linf", "0.2", "98"),
            row("b", "quantize", "worst-case", "0.1", "98"), row("b", "quantize", "worst-case", "0.2", "98")]
    labels = {"a": {"defense": "none"}, "b": {"defense": "quantize"}}
    md = grid_figures(tmp_path, rows, labels, ["defense"], "g", {"quantize": "Bit depth"})
    (panels,) = drawn
    titles = [p[0] for p in panels]
    assert titles == ["worst case", "PGD-Linf (white-box)"]  # no Square panel
    assert [name for name, _ in panels[1][1]] == ["No defense", "Bit depth"]
    assert "defense=" not in md and "*Figure: Robust accuracy (%) vs eps" in md


@pytest.mark.parametrize("text", ["", "[grid]\nci = true\n", "[settings]\nn = 5\n"])
def test_an_empty_grid_or_one_without_axes_is_a_usage_error(tmp_path, capsys, text):
    toml = tmp_path / "g.toml"
    toml.write_text(text)
    assert main(["grid", str(toml), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "[axes]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
