"""``harness grid``: cells from a TOML file, resume after kill -9, concurrent processes, the combined tables, Ray.

One small grid (4 cells of 20 digits images: seeds 0, 1 x PGD steps 2, 3; FGSM and PGD at two budgets) serves
most tests; its uninterrupted in-process run is the reference every other way of running it must equal byte for
byte (results.csv).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.grid import load_grid, store
from harness.report import COLUMNS, EXTRA_COLUMNS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = """
[grid]
ci = true
[axes]
defense = ["none"]
attack = ["fgsm", "pgd_linf"]
eps = [0.05, "1/10"]
seed = [0, 1]
"set.pgd_linf.steps" = [2, 3]
[settings]
n = 20
"""


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def head(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def grid_cmd(toml: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "grid", str(toml), "--out", str(out), "--quiet", *extra]


def spawn(toml: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(grid_cmd(toml, out, *extra), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def states(toml: Path, out: Path) -> list[str]:
    grid = load_grid(toml, str(out))
    return [store.status(out, c) for c in grid.cells]


def wait_until(predicate, timeout: float = 120.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def stamps(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/done.json")}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    toml = folder / "small.toml"
    toml.write_text(SMALL)
    return toml


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    """The uninterrupted run, in-process."""
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["grid", str(small), "--out", str(out), "--quiet"]) == 0
    return out


def test_dry_run_lists_the_cells_and_writes_nothing(small, reference, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    assert main(["grid", str(small), "--out", str(fresh), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "4 cells (4 to do)" in text and text.count("harness run ") == 4
    assert "set.pgd_linf.steps=3" in text and "--eps 0.05,1/10" in text
    assert not fresh.exists()
    assert main(["grid", str(small), "--out", str(reference), "--dry-run"]) == 0
    assert "4 cells (4 done)" in capsys.readouterr().out


def test_combined_results_are_the_cells_rows_in_order(small, reference):
    grid = load_grid(small, str(reference))
    combined = rows(reference / "results.csv")
    expected = [r for c in grid.cells for r in rows(reference / "cells" / c.id / "results.csv")]
    assert len(combined) == 4 * 2 * 3  # cells x eps x (fgsm, pgd_linf, worst-case)
    assert [{k: v for k, v in r.items() if k not in ("cell", "set.pgd_linf.steps")} for r in combined] == expected
    header, cell_header = (head(p) for p in (reference / "results.csv", reference / "cells" / grid.cells[0].id / "results.csv"))
    assert header[:len(COLUMNS + EXTRA_COLUMNS)] == COLUMNS + EXTRA_COLUMNS  # docs/CONTRACTS.md's columns first
    assert header == cell_header + ["cell", "set.pgd_linf.steps"]
    assert [r["set.pgd_linf.steps"] for r in combined[::6]] == ["2", "3", "2", "3"]
    assert [r["seed"] for r in combined[::6]] == ["0", "0", "1", "1"]
    assert all((reference / "cells" / c.id / "done.json").is_file() for c in grid.cells)
    assert not list(reference.rglob("*.tmp"))
    md = (reference / "results.md").read_text()
    assert "| defense | seed | pgd_linf.steps | eps " in re.sub(r" +", " ", md) and "[" in md  # ci = true: intervals


def test_complete_cells_are_not_recomputed(small, reference):
    before, csv_bytes = stamps(reference), (reference / "results.csv").read_bytes()
    assert main(["grid", str(small), "--out", str(reference), "--quiet"]) == 0
    assert stamps(reference) == before and len(before) == 4
    assert (reference / "results.csv").read_bytes() == csv_bytes


def test_a_partial_cell_is_recomputed(small, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    grid = load_grid(small, str(out))
    victim = out / "cells" / grid.cells[2].id
    (victim / "done.json").unlink()
    (victim / "results.csv").write_text("half-written")
    before = stamps(out)
    assert states(small, out).count("partial") == 1
    assert main(["grid", str(small), "--out", str(out), "--quiet"]) == 0
    after = stamps(out)
    assert {k: v for k, v in after.items() if k != victim.name} == before and victim.name in after
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_kill_9_mid_grid_then_resume_gives_the_same_bytes(small, reference, tmp_path):
    out = tmp_path / "out"
    proc = spawn(small, out)
    try:
        caught = wait_until(lambda: {"done", "running"} <= set(states(small, out)))
        assert caught, "never saw one cell done and another running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    s = states(small, out)
    assert "done" in s and s.count("done") < 4, s
    done_before = stamps(out)
    rerun = spawn(small, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert {k: stamps(out)[k] for k in done_before} == done_before  # complete cells kept
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert not list(out.rglob("*.tmp"))


def test_two_grid_processes_on_one_folder(small, reference, tmp_path):
    out = tmp_path / "out"
    procs = [spawn(small, out) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in results]
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert states(small, out) == ["done"] * 4
    for c in load_grid(small, str(out)).cells:  # every cell folder whole: the run's files and the marker
        files = {p.name for p in (out / "cells" / c.id).iterdir()}
        assert {"results.csv", "run.json", "done.json"} <= files and not any(f.endswith(".tmp") for f in files)


BAD = {
    "syntax": "[axes\ndefense = [",
    "unknown table": "[axis]\ndefense = ['none']",
    "unknown axis": "[axes]\ndefenses = ['none']",
    "empty axis": "[axes]\ndefense = []",
    "not a list": "[axes]\ndefense = 'none'",
    "unknown defense": "[axes]\ndefense = ['nonee']",
    "bad eps": "[axes]\neps = ['a lot']",
    "negative seed": "[axes]\nseed = [-1]",
    "twice": "[axes]\nseed = [0, 0]",
    "bad setting": "[settings]\nn = 0",
    "unknown setting": "[settings]\nepochs = 3",
    "axis and setting": "[axes]\nseed = [0]\n[settings]\nseed = 1",
    "exclude unknown axis": "[axes]\nseed = [0, 1]\n[[exclude]]\nmodel = 'x'",
    "exclude unknown value": "[axes]\nseed = [0, 1]\n[[exclude]]\nseed = 2",
    "everything excluded": "[axes]\nseed = [0]\n[[exclude]]\nseed = 0",
    "bad set": "[settings]\nset = ['steps']",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_grid_file_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text(BAD[case])
    out = tmp_path / "out"
    assert main(["grid", str(toml), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_scoped_sets_norms_and_excludes(tmp_path):
    toml = tmp_path / "g.toml"
    toml.write_text("""
[axes]
defense = ["none", "quantize"]
norm = ["linf", "l2"]
attack = ["fgsm", "pgd_linf", "pgd_l2"]
eps = {linf = [0.1], l2 = [0.5]}
set.quantize.bits = [2, 3]
[[exclude]]
norm = "l2"
set.quantize.bits = 3
""")
    cells = load_grid(toml).cells
    got = [(c.labels["defense"], c.labels["norm"], c.labels["set.quantize.bits"], c.spec["attack"], c.spec["eps"])
           for c in cells]
    assert got == [("none", "linf", "", ["fgsm", "pgd_linf"], ["0.1"]),  # bits=3 is the same run: listed once
                   ("none", "l2", "", ["fgsm", "pgd_l2"], ["0.5"]),
                   ("quantize", "linf", "2", ["fgsm", "pgd_linf"], ["0.1"]),
                   ("quantize", "linf", "3", ["fgsm", "pgd_linf"], ["0.1"]),
                   ("quantize", "l2", "2", ["fgsm", "pgd_l2"], ["0.5"])]
    assert "set" not in cells[0].options and cells[2].options["set"] == ["quantize.bits=2"]
    assert len({c.id for c in cells}) == 5


def tabular(tex: str) -> tuple[int, list[list[str]]]:
    """(columns the spec declares, cells of every row) of the one tabular in ``tex``."""
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex).group(1)
    body = tex.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0]
    lines = [ln.strip() for ln in body.splitlines() if ln.strip() and ln.strip() != "\\midrule"]
    assert all(ln.endswith("\\\\") for ln in lines)
    return len(spec), [re.split(r"(?<!\\)&", ln[:-2]) for ln in lines]


def test_results_tex_is_a_booktabs_tabular_of_the_md_table(reference, tmp_path):
    """The same table as results.md, paper-ready: display names, each number rounded to the precision of its
    interval (n = 20: +-12 points, no decimals) with the half-width as +-, the flag daggers where md has them."""
    from harness.display import decimals, display

    tex = (reference / "results.tex").read_text()
    assert "\\caption{" in tex and "\\label{tab:small}" in tex and "\\begin{table}" in tex
    ncol, cells = tabular(tex)
    assert ncol == 4 + 4  # defense, seed, steps, eps | Clean, fgsm, pgd_linf, Worst case
    assert all(len(r) == ncol for r in cells) and len(cells) == 1 + 4 * 2
    assert cells[0][-1].strip() == "Worst case" and cells[0][-2].strip() == "PGD-Linf (white-box)"
    md_lines = [ln for ln in (reference / "results.md").read_text().split("\n## ")[0].splitlines()
                if ln.startswith("|") and not ln.startswith("|--")]
    md = [[c.strip() for c in ln.strip("|").split("|")] for ln in md_lines]
    assert len(md) == len(cells)
    halves = [(float(h) - float(lo)) / 2 for r in md[1:] for c in r[4:]
              for lo, h in re.findall(r"\[(\S+), (\S+)\]", c)]
    d = decimals(max(halves))  # one precision for the table: that of its widest interval
    assert d == 0 and max(halves) > 10
    for t, m in zip(cells[0], md[0]):
        ident, _, threat = m.partition(" (")
        assert t.strip().replace("\\_", "_") == display(ident) + (f" ({threat}" if threat else "")
    for trow, mrow in zip(cells[1:], md[1:]):
        assert [t.strip() for t in trow[:4]] == [display(m) for m in mrow[:4]]
        for t, m in zip(trow[4:], mrow[4:]):
            got = re.fullmatch(r"(\S+) \{\\scriptsize \$\\pm\$ (\S+)\}(\$\^\\dagger\$)?", t.strip())
            want = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]( †)?", m)
            value, low, high = (float(x) for x in want.groups()[:3])
            assert got.groups()[:2] == (f"{value:.{d}f}", f"{(high - low) / 2:.{d}f}")
            assert bool(got.group(3)) == bool(want.group(4))
    if shutil.which("pdflatex"):
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n\\input{"
                       f"{reference / 'results.tex'}" + "}\n\\end{document}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path,
                              capture_output=True, check=False)
        assert done.returncode == 0, done.stdout[-2000:]


def test_the_ci_default_grid_equals_the_committed_baseline(tmp_path):
    """The smallest grid file of reports/grids, end to end: the CI gate's run."""
    out = tmp_path / "ci"
    assert main(["grid", str(REPO / "reports/grids/ci_default.toml"), "--out", str(out), "--quiet"]) == 0
    keys = ["dataset", "model", "defense", "attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc",
            "robust_ci_low", "robust_ci_high", "clean_ci_low", "clean_ci_high"]
    base = rows(REPO / "reports/baselines/digits_default.csv")
    assert [{k: r[k] for k in keys} for r in rows(out / "results.csv")] == [{k: r[k] for k in keys} for r in base]
    assert main(["check", "--baseline", str(REPO / "reports/baselines/digits_default.csv"), str(out / "results.csv")]) == 0


def ray_workers() -> list:
    """Ray worker processes of this test (descendants of this process) running a grid cell."""
    import psutil

    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "ray::harness_grid_cell" in " ".join(_cmdline(p))]


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001 - gone meanwhile
        return []


def test_ray_equals_local_after_a_worker_is_killed(small, reference, tmp_path):
    """A local 2-CPU Ray instance; the first worker seen running a cell is killed (-9) -- robustly caught while it
    loads the harness; Ray retries its task on a new worker while the other worker finishes cells -- and the grid
    still ends with the local backend's bytes; then a cell whose marker is lost is recomputed on resume."""
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (./setup.sh --dev installs it)")
    out = tmp_path / "ray"
    killed = []

    def killer():
        if wait_until(ray_workers, timeout=240):
            victim = ray_workers()[0]
            victim.send_signal(signal.SIGKILL)
            killed.append(victim.pid)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        assert main(["grid", str(small), "--out", str(out), "--quiet", "--backend", "ray"]) == 0
        thread.join(timeout=5)
        assert killed, "never saw a worker running a cell"
        assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
        # resume: the cell folders are the state; a lost marker is recomputed, the rest kept
        grid = load_grid(small, str(out))
        (out / "cells" / grid.cells[1].id / "done.json").unlink()
        before = stamps(out)
        assert main(["grid", str(small), "--out", str(out), "--quiet", "--backend", "ray"]) == 0
        assert {k: v for k, v in stamps(out).items() if k in before} == before
        assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    finally:
        ray.shutdown()


def test_a_detector_cell_gives_both_readings_in_the_tables(tmp_path):
    """``not defended / defended`` (robust_acc / robust_acc_reject_defended) in results.md for a detector's cells."""
    toml = tmp_path / "g.toml"
    toml.write_text('[axes]\ndefense = ["none", "msp_detector"]\nattack = ["pgd_linf"]\n[settings]\nn = 30\n'
                    'set = ["steps=3"]\n')
    assert main(["grid", str(toml), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out/results.csv")))
    det = next(r for r in rows if r["defense"] == "msp_detector" and r["attack"] == "pgd_linf")
    md = (tmp_path / "out/results.md").read_text().split("## All rows")[0]
    line = next(ln for ln in md.splitlines() if ln.startswith("| msp_detector"))
    assert f"{det['robust_acc']} / {det['robust_acc_reject_defended']}" in line
    assert " / " not in next(ln for ln in md.splitlines() if ln.startswith("| none")) and "as defended" in md


@pytest.mark.parametrize("path", sorted((REPO / "reports" / "grids").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_grid_file_is_valid(path):
    """The grid files of reports/grids load (names, labels, scoped settings, excludes) and every cell is distinct."""
    grid = load_grid(path)
    assert grid.cells and len({c.id for c in grid.cells}) == len(grid.cells)
