"""Several budgets in one run (``--eps a,b,c``) and one attack object across budgets (issues 12 and 13)."""
from __future__ import annotations

import csv

from harness.cli import main
from harness.core.registry import ATTACKS

SKIP = {"config_hash"}


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_several_eps_equal_separate_runs_row_for_row(tmp_path, adv_model):
    """Row for row (all but the config hash) a run over three budgets equals three runs of one; preempt, whose
    delta follows eps, is built once per budget, ``none`` once for all."""
    common = ["run", "--defense", "none", "--defense", "preempt", "--attack", "fgsm", "--attack", "pgd_linf",
              "--n", "40", "--quiet", "--set", "preempt.maxiter=3"]
    assert main(common + ["--eps", "0.05,0.1,0.2", "--out", str(tmp_path / "all")]) == 0
    several = rows(tmp_path / "all/results.csv")
    single = {}
    for e in ("0.05", "0.1", "0.2"):
        assert main(common + ["--eps", e, "--out", str(tmp_path / e)]) == 0
        single[e] = rows(tmp_path / e / "results.csv")

    def key(r):
        return r["defense"], r["eps"], r["attack"]

    expect = {key(r): r for rs in single.values() for r in rs}
    assert len(several) == len(expect) == 2 * 3 * 3  # (2 attacks + worst case) x 3 eps x 2 defenses
    for r in several:
        assert {k: v for k, v in r.items() if k not in SKIP} == {k: v for k, v in expect[key(r)].items() if k not in SKIP}
    acc = {key(r): float(r["robust_acc"]) for r in several}
    assert acc["none", "0.2", "worst-case"] < acc["none", "0.05", "worst-case"]  # not a constant: eps reaches the cells
    md = (tmp_path / "all/results.md").read_text()
    assert "| eps " in md.replace("|-", "").split("## All cells")[0]


def test_adaptive_sweep_builds_its_attacks_once(monkeypatch, adv_model, digits_test):
    """Algorithm 4's eps' sweep reuses one PGD and one AutoAttack object (``set_budget`` per eps')."""
    import attacks.adaptive as adaptive

    built = []
    for cls in ("PGD", "AutoAttack"):
        orig = getattr(adaptive, cls)
        monkeypatch.setattr(adaptive, cls, type(cls, (orig,), {"__init__": lambda self, *a, _o=orig, **k: (built.append(_o), _o.__init__(self, *a, **k))[1]}))
    attack = ATTACKS.create("adaptive_linf", eps=0.1, use_autoattack=False)
    x, y = digits_test.x[:8], digits_test.y[:8]
    res = attack.run(adv_model, x, y)
    assert len(res.candidates) == 4 and len(built) == 3  # two PGD (early stop or not) and one AutoAttack, at build
    attack.set_budget("linf", 0.2)
    attack.run(adv_model, x, y)
    assert len(built) == 3
