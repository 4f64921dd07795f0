"""The shipped A5 classifiers (``digits_a5_cnn_c0``, ``digits_a5_cnn_c01``: a5_cnn_small trained by CROWN-IBP at
eps_A^C = 0 and 0.1; ``reports/grids/a5_digits.toml``): they load from the shipped files without training, and the
eps_A^C = 0.1 one is certifiably (IBP) robust on part, not all, of the digits test images at Linf 0.1, through the
certifier cell of ``harness run`` as through the bounds directly."""
from __future__ import annotations

import csv

import pytest
import torch

from harness import bounds
from harness.cli import main
from harness.core import artifacts
from harness.core.registry import ZOO
from harness.models.zoo import artifact_name, load_zoo
from harness.plugins import load_builtins

pytestmark = pytest.mark.usefixtures("one_thread")
load_builtins()
A5_ZOO = ("digits_a5_cnn_c0", "digits_a5_cnn_c01")


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("name", A5_ZOO)
def test_the_a5_classifiers_are_shipped_and_load_without_training(name, empty_cache):
    spec = ZOO.create(name)
    assert spec.shipped and spec.arch == "a5_cnn_small" and spec.recipe == "crown-ibp"
    path = artifacts.shipped_file(artifact_name(name, spec), spec.sha256)  # checks the sha256
    model = load_zoo(name)
    assert not empty_cache.exists() or not any(empty_cache.iterdir())  # loaded, not trained
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_the_certified_accuracy_of_the_robust_a5_classifier(digits_test, empty_cache, tmp_path):
    """First 60 test images, Linf 0.1: 0 < IBP-certified accuracy < 100, and not above the clean accuracy."""
    out = tmp_path / "run"
    assert main(["run", "--model", "digits_a5_cnn_c01", "--defense", "none", "--attack", "certify_ibp",
                 "--eps", "0.1", "--n", "60", "--subset", "first", "--quiet", "--out", str(out)]) == 0
    (row,) = [r for r in csv.DictReader(open(out / "results.csv")) if r["attack"] == "certify_ibp"]
    clean, cert = float(row["clean_acc"]), float(row["certified_acc"])
    assert 0 < cert < 100 and cert <= clean
    model, test = load_zoo("digits_a5_cnn_c01"), digits_test.take(60)
    with torch.no_grad():
        ok = bounds.certified(model, test.x, test.y, 0.1, method="ibp")
        correct = model(test.x).argmax(1) == test.y
    assert not (ok & ~correct).any()  # a certified sample is classified correctly
    assert cert == pytest.approx(100 * ok.float().mean().item(), abs=0.01)
    assert not any(empty_cache.iterdir()) if empty_cache.exists() else True


def test_a5_r_trains_for_the_classifier_inside_the_engines_wrapper(digits_test, empty_cache):
    """A5/R's network is trained for, and cached under, the run's classifier itself: the engine's pass counter
    around the zoo model (``harness run``) and the bare model share one R (one training, one cache file)."""
    from harness.core.registry import DEFENSES
    from harness.counting import CountingModel

    model, x = load_zoo("digits_a5_cnn_c01"), digits_test.x[:20]
    kw = {"eps": 0.1, "delta": 0.3, "epochs": 1, "start": 1, "length": 0, "milestones": (10,)}
    wrapped = DEFENSES.create("a5_robustifier", **kw).prepare(CountingModel(model), x, None)
    bare = DEFENSES.create("a5_robustifier", **kw).prepare(model, x, None)
    assert torch.equal(wrapped, bare) and len(list(empty_cache.glob("a5-r-*.pt"))) == 1


# Layout -> (defense, the set key of its eps_D) in the "ours (paper)" tables of docs/results/a5.md.
LAYOUTS = {"C only": ("none", None), "A5/O": ("a5_offline", "set.a5_offline.delta"),
           "A5/R": ("a5_robustifier", "set.a5_robustifier.delta"), "A5/RC": ("a5_co", "set.a5_co.delta")}


@pytest.mark.parametrize("grid, models, count", [("a5_mnist", ("c0", "c01", "c03"), 18),  # Tables 2-3: 6 rows x 3
                                                 ("a5_mnist_r", ("c03",), 4),             # Tables 4-5: 4 rows x 1
                                                 ("a5_mnist_r01", ("c01",), 4)])
def test_the_mnist_comparison_with_the_paper_is_the_committed_results(grid, models, count):
    """docs/results/a5.md's "ours (paper)" tables: each of our errors is 100 minus the committed results of the grid
    (clean; AutoAttack; IBP-certified), each paper number is the grid caption's (the paper's Tables 2-5)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with (root / "reports" / "results" / f"{grid}.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    page = (root / "docs" / "results" / "a5.md").read_text()
    start = page.index(f"<!-- ours (paper): {grid} -->")
    block = page[start:page.index("<!-- /ours (paper) -->", start)]
    grid_file = (root / "reports" / "grids" / f"{grid}.toml").read_text()
    paper = {tuple(c.strip() for c in line.strip("# |").split("|")[:2]): line.strip("# |").split("|")[2:]
             for line in grid_file.splitlines() if re.match(r"# \| [2-5], ", line)}
    triple = r"([\d.]+) \[([\d.]+), ([\d.]+)\]"
    checked = 0
    for line in block.splitlines():
        if not re.match(r"\| [2-5], ", line):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        layout, eps = cells[0], cells[1]
        name = layout.split(", ")[1]
        defense, key = LAYOUTS[name if name == "C only" else name.split()[0]]
        delta = "" if key is None else name.split()[-1]
        for model, cell, theirs in zip(models, cells[2:], paper[(layout, eps)], strict=True):
            numbers = re.fullmatch(triple + r" \(paper " + triple + r"\)", cell).groups()
            ours, them = numbers[:3], numbers[3:]
            assert them == re.fullmatch(triple, theirs.strip()).groups(), (layout, eps, model)
            mine = {r["attack"]: r for r in rows if r["model"] == f"mnist_a5_cnn_{model}" and r["defense"] == defense
                    and (key is None or r[key] == delta) and float(r["eps"]) == float(eps)}
            expect = (100 - float(mine["autoattack"]["clean_acc"]), 100 - float(mine["autoattack"]["robust_acc"]),
                      100 - float(mine["certify_ibp"]["certified_acc"]))
            assert tuple(float(v) for v in ours) == pytest.approx(expect, abs=1e-9), (layout, eps, model)
            checked += 1
    assert checked == count
