"""Labelled instances: one plugin with two parameter sets in one run (``--attack dlr=pgd_linf --set dlr.loss=dlr``)
and in a grid (issue 13, item 4: a table's columns that are one attack under several settings)."""
from __future__ import annotations

import csv
import json

import pytest

from harness.cli import main
from harness.config import Overrides
from harness.core.registry import ATTACKS
from harness.grid import load_grid
from harness.plugins import load_builtins

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(path):
    with open(path, newline="") as fh:
        return {(r["defense"], r["attack"]): r for r in csv.DictReader(fh)}


def test_a_label_scopes_its_own_settings():
    load_builtins()
    over = Overrides(["dlr.loss=dlr", "pgd_linf.steps=7", "alpha=0.02"])
    assert over.for_plugin(ATTACKS, "pgd_linf") == {"steps": 7, "alpha": 0.02}
    assert over.for_plugin(ATTACKS, "pgd_linf", "dlr") == {"loss": "dlr", "alpha": 0.02}  # not the name's steps


def test_one_plugin_twice_in_a_run(tmp_path):
    """Each labelled row is what the label gives in a run of its own (cells are seeded by label), the settings
    reach only their label, and run.json records each instance with its plugin."""
    common = ["run", "--n", "60", "--quiet", "--set", "steps=5"]
    both = ["--attack", "pgd_linf", "--attack", "dlr=pgd_linf", "--set", "dlr.loss=dlr"]
    assert main([*common, *both, "--out", str(tmp_path / "both")]) == 0
    assert main([*common, "--attack", "dlr=pgd_linf", "--set", "dlr.loss=dlr", "--out", str(tmp_path / "one")]) == 0
    got, alone = rows(tmp_path / "both/results.csv"), rows(tmp_path / "one/results.csv")
    assert set(got) == {("none", "pgd_linf"), ("none", "dlr"), ("none", "worst-case")}
    skip = {"config_hash"}
    assert {k: v for k, v in got["none", "dlr"].items() if k not in skip} == \
        {k: v for k, v in alone["none", "dlr"].items() if k not in skip}
    config = json.loads((tmp_path / "both/run.json").read_text())["config"]["attacks"]
    assert [(a["name"], a["registry_name"], a["loss"]) for a in config] == [("pgd_linf", "pgd_linf", "ce"),
                                                                             ("dlr", "pgd_linf", "dlr")]
    assert 0 < float(got["none", "worst-case"]["robust_acc"]) < 100


@pytest.mark.parametrize("flags, message", [
    (["--attack", "pgd=fgsm"], "the label 'pgd' is another plugin's name"),
    (["--attack", "a.b=fgsm"], "must be a word"),
    (["--attack", "fgsm", "--attack", "fgsm"], "fgsm is given twice"),
    (["--attack", "x=nosuch"], "nosuch"),
    (["--defense", "q=quantize", "--set", "quantize.bits=2"], "no plugin of this run has that parameter"),
])
def test_bad_labels_are_one_line_exit_2(flags, message, tmp_path, capsys):
    assert main(["run", "--n", "4", "--quiet", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_labels_in_a_grid(tmp_path):
    """A set value scoped to a label reaches only the cells that run that label; the defense column shows it."""
    toml = tmp_path / "g.toml"
    toml.write_text("""
[axes]
defense = ["none", "q2=quantize"]
attack = ["fgsm", "dlr=pgd_linf"]
[settings]
set = ["dlr.loss=dlr", "q2.bits=2"]
""")
    cells = load_grid(toml).cells
    assert [c.labels["defense"] for c in cells] == ["none", "q2"]
    assert cells[0].options["defense"] == ["none"] and "q2.bits=2" not in cells[0].options["set"]
    assert "dlr=pgd_linf" in cells[1].options["attack"]
    assert "q2.bits=2" in cells[1].options["set"] and "dlr.loss=dlr" in cells[1].options["set"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[axes]\nattack = ["fgsm=pgd_linf"]\n')
    assert main(["grid", str(bad), "--out", str(tmp_path / "o")]) == 2


def test_an_exclude_with_an_attack_drops_it_from_the_matching_cells(tmp_path):
    toml = tmp_path / "g.toml"
    toml.write_text("""
[axes]
defense = ["none", "quantize"]
attack = ["fgsm", "aa=pgd_linf"]
[[exclude]]
defense = "none"
attack = "aa=pgd_linf"
""")
    cells = load_grid(toml).cells
    assert [(c.labels["defense"], c.spec["attack"]) for c in cells] == [("none", ["fgsm"]),
                                                                        ("quantize", ["fgsm", "aa=pgd_linf"])]
    toml.write_text('[axes]\ndefense = ["none"]\nattack = ["fgsm"]\n[[exclude]]\ndefense = "none"\nattack = "fgsm"\n')
    assert main(["grid", str(toml), "--out", str(tmp_path / "o")]) == 2  # no attack left for the cell
