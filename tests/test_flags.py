"""Gradient-masking checks (issue 13, item 6): the quantizer trips them, an honest evaluation trips none."""
from __future__ import annotations

import csv

from harness.cli import main
from harness.flags import masking_flags


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_quantizer_masks_gradients_and_is_flagged(tmp_path):
    """Bit-depth reduction: white-box PGD sees zero gradients; Square (gradient-free) and eps = 1 expose it."""
    out = tmp_path / "q"
    assert main(["run", "--defense", "quantize", "--model", "digits_cnn", "--attack", "pgd_linf", "--attack", "square",
                 "--eps", "0.1,1.0", "--n", "40", "--set", "square.n_queries=300", "--quiet", "--out", str(out)]) == 0
    got = {(r["attack"], r["eps"]): r["flags"] for r in rows(out / "results.csv")}
    assert "gradient-free-stronger" in got["pgd_linf", "0.1"]
    assert "robust-at-unbounded-eps" in got["pgd_linf", "1"]
    assert got["square", "0.1"] == "" and got["worst-case", "0.1"] == ""
    md = (out / "results.md").read_text()
    assert "- **Warning:** gradient masking? quantize / pgd_linf (eps 0.1): gradient-free-stronger" in md


def test_an_honest_evaluation_trips_no_flag(tmp_path, adv_model):
    """none on the adversarially trained model: PGD beats FGSM and Square, accuracy falls with eps."""
    out = tmp_path / "n"
    assert main(["run", "--defense", "none", "--attack", "fgsm", "--attack", "pgd_linf", "--attack", "square",
                 "--eps", "0.05,0.1,0.2", "--n", "60", "--set", "square.n_queries=300", "--quiet", "--out", str(out)]) == 0
    got = rows(out / "results.csv")
    assert "flags" not in got[0] and "Warning" not in (out / "results.md").read_text()
    assert float(got[-1]["robust_acc"]) < float(got[3]["robust_acc"])  # not vacuous: eps matters


def _row(attack, eps, acc, norm="linf"):
    return {"dataset": "d", "model": "m", "defense": "x", "threat": "white-box", "norm": norm, "attack": attack,
            "eps": str(eps), "robust_acc": f"{acc:.2f}"}


def test_each_check_on_hand_made_rows():
    g = {"fgsm": "single-step", "pgd": "iterative", "square": "gradient-free"}
    r = [_row("fgsm", 0.1, 40), _row("pgd", 0.1, 45), _row("square", 0.1, 50), _row("pgd", 0.2, 45.5),
         _row("pgd", 0.3, 60), _row("worst-case", 0.3, 60)]
    f = [[x.split(":")[0] for x in fs] for fs in masking_flags(r, g)]
    assert f[0] == [] and f[2] == []
    assert f[1] == ["single-step-stronger"]  # 45 > 40 + 1
    assert f[3] == []  # 45.5 vs 45 at the smaller eps: within the tolerance
    assert f[4] == ["not-monotone-in-eps"] and f[5] == []  # worst-case rows are not an attack
