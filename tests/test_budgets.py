"""Several budgets in one run (``--eps a,b,c``) and one attack object across budgets (issues 12 and 13)."""
from __future__ import annotations

import csv

import pytest
import torch

from harness.cli import main
from harness.core.attack import Attack
from harness.core.budget import Budget
from harness.core.errors import UsageError
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
    """Algorithm 4's eps' sweep reuses one PGD and one AutoAttack object (each call gets its eps')."""
    import attacks.adaptive as adaptive

    built = []
    for cls in ("PGD", "AutoAttack"):
        orig = getattr(adaptive, cls)
        monkeypatch.setattr(adaptive, cls, type(cls, (orig,), {"__init__": lambda self, *a, _o=orig, **k: (built.append(_o), _o.__init__(self, *a, **k))[1]}))
    attack = ATTACKS.create("adaptive_linf", use_autoattack=False)
    x, y = digits_test.x[:8], digits_test.y[:8]
    res = attack.run(adv_model, x, y, Budget("linf", 0.1))
    assert len(res.candidates) == 4 and len(built) == 3  # two PGD (early stop or not) and one AutoAttack, at build
    attack.run(adv_model, x, y, Budget("linf", 0.2))
    assert len(built) == 3


def _budget_state(obj, seen=None) -> list[str]:
    """Attribute paths of ``obj`` (an attack and the attacks it holds, at any depth) that hold a budget."""
    found = []
    for k, v in vars(obj).items():
        if k in ("eps", "norm", "budget", "_budget") or isinstance(v, Budget):
            found.append(k)
        for inner in (v.values() if isinstance(v, dict) else [v]):
            if isinstance(inner, Attack):
                found += [f"{k}.{p}" for p in _budget_state(inner)]
    return found


@pytest.mark.parametrize("name,kw", [("pgd_linf", {"steps": 2}), ("fgsm", {}), ("pgd", {"steps": 2}),
                                     ("bpda", {"inner.steps": 2}), ("eot", {"samples": 2, "inner.steps": 2}),
                                     ("adaptive_linf", {"use_autoattack": False, "steps": 2}),
                                     ("certify_ibp", {}), ("ta.PGD", {"steps": 2}), ("fb.LinfPGD", {"steps": 2})])
def test_an_attack_carries_no_budget_after_use(name, kw, adv_model, digits_test):
    """The budget is an argument of each call: after runs at two budgets the attack object (and every attack it
    holds) has no eps, norm or budget attribute, and describes itself without one unless asked at a budget."""
    attack = ATTACKS.create(name, **kw)
    x, y = digits_test.x[:6], digits_test.y[:6]
    for eps in (0.05, 0.1):
        res = attack.run(adv_model, x, y, Budget("linf", eps))
        if not attack.certifies:
            assert (res.images - x).abs().amax() <= eps + 1e-6
    assert _budget_state(attack) == []
    assert not {"eps", "norm"} & set(attack.describe())
    assert {k: attack.describe(Budget("linf", 0.1))[k] for k in ("norm", "eps")} == {"norm": "linf", "eps": 0.1}


def test_one_attack_object_serves_two_budgets_as_two_fresh_ones(adv_model, digits_test):
    """The same object at eps 0.05 then 0.1 gives what a fresh object gives at 0.1: no budget left behind."""
    x, y = digits_test.x[:16], digits_test.y[:16]
    used = ATTACKS.create("pgd_linf", steps=3)
    used.perturb(adv_model, x, y, Budget("linf", 0.05))
    torch.manual_seed(0)
    a = used.perturb(adv_model, x, y, Budget("linf", 0.1))
    torch.manual_seed(0)
    b = ATTACKS.create("pgd_linf", steps=3).perturb(adv_model, x, y, Budget("linf", 0.1))
    assert torch.equal(a, b) and (a - x).abs().amax() > 0.05 + 1e-6  # the second budget reached the steps


@pytest.mark.parametrize("setting", ["pgd_linf.eps=0.2", "eps=0.2", "pgd_linf.norm=l2", "bpda.inner.eps=0.2"])
def test_an_attack_budget_given_by_set_is_a_usage_error(setting, capsys):
    """``--set pgd_linf.eps=0.2`` with ``--eps 0.1`` was silently overwritten; now one line saying to use --eps."""
    assert main(["run", "--attack", "pgd_linf", "--attack", "bpda", "--eps", "0.1", "--n", "4", "--quiet",
                 "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    word = setting.split("=")[0].split(".")[-1]
    assert len(err.splitlines()) == 1 and f"use --{word}" in err and setting.split("=")[0] in err


def test_budget_is_a_checked_value():
    assert Budget("LINF", 1) == Budget("linf", 1.0) and Budget("l2", 0.5).scaled(0.5) == Budget("l2", 0.25)
    with pytest.raises(UsageError, match="eps must be >= 0"):
        Budget("linf", -0.1)
    with pytest.raises(UsageError, match="norm must be one of"):
        Budget("l1", 0.1)
    with pytest.raises(UsageError, match="supports norms linf"):
        ATTACKS.create("pgd_linf").supports(Budget("l2", 0.5))
