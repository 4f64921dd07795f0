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


def _run_rows(out, *args):
    assert main(["run", "--model", "digits_cnn", "--eps", "0.05,0.1,0.2", "--n", "60", "--quiet", "--no-samples",
                 "--out", str(out), *args]) == 0
    return rows(out / "results.csv")


def test_the_quantizer_under_fgsm_and_pgd_is_flat_in_eps(tmp_path):
    """Bit-depth reduction: FGSM and PGD stay at the clean accuracy at every eps, where the undefended model (the
    ``none`` defense of the same run) falls; with no BPDA in the run there is nothing to be stronger."""
    got = {(r["defense"], r["attack"], r["eps"]): r for r in _run_rows(
        tmp_path / "q", "--defense", "none", "--defense", "quantize", "--attack", "fgsm", "--attack", "pgd_linf")}
    for attack in ("fgsm", "pgd_linf"):
        q, n = (float(got[d, attack, "0.2"]["robust_acc"]) for d in ("quantize", "none"))
        assert q > 80 and n < 10  # not vacuous: the quantizer's number stays, the undefended model's falls
        assert got["quantize", attack, "0.2"]["flags"] == "flat-in-eps"  # the undefended model collapsed
        assert got["quantize", attack, "0.05"]["flags"] == ""  # the smallest eps: the start of the range
    assert all(r["flags"] == "" for k, r in got.items() if k[0] == "none")
    md = (tmp_path / "q" / "results.md").read_text()
    assert "quantize / pgd_linf (eps 0.2): flat-in-eps: pgd_linf stays at" in md
    assert "while none / pgd_linf (white-box) falls" in md


def test_bpda_far_stronger_than_pgd_on_the_quantizer_is_flagged(tmp_path):
    got = {(r["defense"], r["attack"], r["eps"]): r for r in _run_rows(
        tmp_path / "b", "--defense", "quantize", "--attack", "pgd_linf", "--attack", "bpda")}
    bpda, pgd = (float(got["quantize", a, "0.1"]["robust_acc"]) for a in ("bpda", "pgd_linf"))
    assert bpda < 50 < pgd
    for eps in ("0.1", "0.2"):
        assert "bpda-eot-stronger" in got["quantize", "pgd_linf", eps]["flags"].split("; ")
        assert got["quantize", "bpda", eps]["flags"] == ""
    # BPDA alone also gives flat-in-eps its collapsing reference, at the largest eps
    assert set(got["quantize", "pgd_linf", "0.2"]["flags"].split("; ")) == {"bpda-eot-stronger", "flat-in-eps"}


def test_bpda_and_eot_declare_what_their_gradients_are():
    from attacks.bpda import BPDA
    from attacks.eot import EOT
    from attacks.pgd import PGD

    assert (BPDA.gradients, EOT.gradients, PGD.gradients) == ("approximated", "expectation", "iterative")


def _nrow(attack, eps, acc, n=100, defense="x", threat="white-box"):
    return {**_row(attack, eps, acc), "n": str(n), "defense": defense, "threat": threat}


def _names(rows_, g):
    return [[x.split(":")[0] for x in fs] for fs in masking_flags(rows_, g)]


def test_bpda_eot_stronger_needs_a_significant_gap():
    g = {"pgd": "iterative", "fgsm": "single-step", "bpda": "approximated", "eot": "expectation"}
    f = _names([_nrow("pgd", 0.1, 90), _nrow("fgsm", 0.1, 92), _nrow("bpda", 0.1, 40), _nrow("eot", 0.1, 89)], g)
    assert f == [["bpda-eot-stronger"], [], [], []]  # FGSM is weaker than an iterative BPDA by nature
    f = _names([_nrow("pgd", 0.1, 90, n=10), _nrow("bpda", 0.1, 80, n=10)], g)  # 1 sample of 10: noise
    assert f == [[], []]
    f = _names([_nrow("pgd", 0.1, 40, n=10000), _nrow("bpda", 0.1, 37, n=10000)], g)  # significant, not far
    assert f == [[], []]


def test_transfer_stronger_compares_the_oblivious_and_the_white_box_attack():
    g = {"pgd": "iterative", "pgd_obl": "iterative"}
    r = [_nrow("pgd", 0.1, 80), _nrow("pgd_obl", 0.1, 30, threat="oblivious"), _nrow("pgd", 0.2, 20),
         _nrow("pgd_obl", 0.2, 18, threat="oblivious")]
    assert _names(r, g) == [["transfer-stronger"], [], [], []]


def test_flat_in_eps_needs_a_falling_reference():
    g = {"pgd": "iterative", "square": "gradient-free"}
    flat = [_nrow("pgd", 0.1, 95, defense="q"), _nrow("pgd", 0.3, 95, defense="q")]
    assert _names(flat, g) == [[], []]  # no series of the results says the range matters
    falls = [_nrow("pgd", 0.1, 60, defense="none"), _nrow("pgd", 0.3, 5, defense="none")]
    assert _names(flat + falls, g) == [[], ["flat-in-eps"], [], []]
    noisy = [_nrow("pgd", 0.1, 95, defense="q"), _nrow("pgd", 0.3, 80, defense="q")]  # kept 84%: hardly fell
    assert _names(noisy + falls, g) == [[], ["flat-in-eps"], [], []]
    honest = [_nrow("pgd", 0.1, 95, defense="q"), _nrow("pgd", 0.3, 70, defense="q")]
    assert _names(honest + falls, g) == [[], [], [], []]
    square_flat = [_nrow("square", 0.1, 95, defense="q"), _nrow("square", 0.3, 95, defense="q")]
    assert _names(square_flat + falls, g) == [[], [], [], []]  # a weak gradient-free attack is not masking
    small = [_nrow("pgd", 0.1, 60, defense="none"), _nrow("pgd", 0.3, 20, defense="none")]
    assert _names(flat + small, g) == [[], [], [], []]  # the reference kept a third: not yet a large budget


def test_a_transfer_attack_beating_white_box_pgd_on_the_quantizer_is_flagged(tmp_path):
    """PGD crafted on the bare classifier (oblivious) and then quantized fools far more samples than PGD through
    the quantizer's zero gradients: the adaptive attack is the weaker one."""
    out = tmp_path / "t"
    assert main(["run", "--defense", "quantize", "--model", "digits_cnn", "--attack", "pgd_linf",
                 "--attack", "obl=pgd_linf", "--set", "obl.threat=oblivious", "--eps", "0.1", "--n", "40",
                 "--quiet", "--no-samples", "--out", str(out)]) == 0
    got = {r["attack"]: r for r in rows(out / "results.csv")}
    assert got["obl"]["threat"] == "oblivious" and float(got["obl"]["robust_acc"]) < 50
    assert got["pgd_linf"]["flags"] == "transfer-stronger" and got["obl"]["flags"] == ""
