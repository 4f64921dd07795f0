"""``run --precision``: autocast for defenses and attacks, verdicts in fp32, the fidelity check (harness/precision.py)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from harness.cli import main
from harness.core.budget import Budget
from harness.entrants import Entrant

pytestmark = pytest.mark.usefixtures("one_thread")

DEFAULT_JOB = ["run", "--defense", "none", "--attack", "fgsm", "--attack", "pgd_linf", "--quiet"]


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, adv_model):
    out = tmp_path_factory.mktemp("fp32") / "out"
    assert main([*DEFAULT_JOB, "--n", "120", "--out", str(out)]) == 0
    return out


def test_bf16_default_job_is_within_the_fp32_intervals(fp32_run, tmp_path):
    out = tmp_path / "bf16"
    assert main([*DEFAULT_JOB, "--n", "120", "--precision", "bf16", "--out", str(out)]) == 0
    low, ref = rows(out / "results.csv"), rows(fp32_run / "results.csv")
    assert [r["attack"] for r in low] == [r["attack"] for r in ref] == ["fgsm", "pgd_linf", "worst-case"]
    for a, b in zip(low, ref):
        assert a["clean_acc"] == b["clean_acc"]  # the clean verdict is fp32 whatever the precision
        assert float(b["robust_ci_low"]) <= float(a["robust_acc"]) <= float(b["robust_ci_high"]), (a, b)
    assert low[0]["config_hash"] != ref[0]["config_hash"]  # precision changes numbers: it is hashed
    info = json.loads((out / "run.json").read_text())
    assert info["precision"] == "bf16" and info["config"]["extra"]["precision"] == "bf16"
    fid = info["fidelity"]
    assert fid["n"] == 100 and fid["precision"] == "bf16"
    assert [(r["attack"], r["outside_ci"]) for r in fid["rows"]] == [
        ("clean", False), ("fgsm", False), ("pgd_linf", False), ("worst-case", False)]
    assert "**Warning:** --precision" not in (out / "results.md").read_text()
    ref_info = json.loads((fp32_run / "run.json").read_text())
    assert ref_info["precision"] == "fp32" and "fidelity" not in ref_info and "precision" not in ref_info["config"]["extra"]


def test_fidelity_warning_fires_on_a_low_precision_bug(fp32_run, tmp_path, monkeypatch):
    """An attack that does nothing under autocast (a broken low-precision path): results.md says so."""
    from attacks.pgd import PGD

    real = PGD.perturb

    def broken(self, model, x, y, budget, context=None):
        return x.clone() if torch.is_autocast_enabled("cpu") else real(self, model, x, y, budget)

    monkeypatch.setattr(PGD, "perturb", broken)
    out = tmp_path / "bug"
    assert main([*DEFAULT_JOB, "--n", "120", "--precision", "bf16", "--fidelity-n", "80", "--out", str(out)]) == 0
    low = rows(out / "results.csv")
    assert all(r["robust_acc"] == r["clean_acc"] for r in low)  # nothing was broken in bf16
    md = (out / "results.md").read_text()
    head = md.split("## All cells")[0]
    assert head.count("**Warning:** --precision bf16") == 3  # fgsm, pgd_linf, worst-case; not the clean row
    assert "none / pgd_linf (eps 0.1) has" in head and "first 80 images" in head
    fid = json.loads((out / "run.json").read_text())["fidelity"]
    bad = {r["attack"]: r for r in fid["rows"] if r["outside_ci"]}
    assert sorted(bad) == ["fgsm", "pgd_linf", "worst-case"]
    assert bad["pgd_linf"]["acc_bf16"] > bad["pgd_linf"]["ci_low"] > bad["pgd_linf"]["acc_fp32"]


def test_verdict_is_judged_outside_autocast(adv_model, digits_test, monkeypatch):
    """The judge (defense.classify) of the final images, and the clean verdict, run with autocast off."""
    from harness.core.registry import ATTACKS, DEFENSES
    from harness.engine import evaluate
    from harness.precision import autocast_for

    seen = []
    defense = DEFENSES.create("none")
    real = type(defense).classify
    monkeypatch.setattr(type(defense), "classify",
                        lambda self, m, x: seen.append(torch.is_autocast_enabled("cpu")) or real(self, m, x))
    attack = ATTACKS.create("fgsm")
    ran = []
    real_run = type(attack).run
    monkeypatch.setattr(type(attack), "run",
                        lambda self, *a, **k: ran.append(torch.is_autocast_enabled("cpu")) or real_run(self, *a, **k))
    amp = autocast_for("bf16", torch.device("cpu"))
    evaluate(adv_model, digits_test.take(20), [("none", Entrant.fixed(defense, [Budget("linf", 0.1)]))],
             [("fgsm", attack)], batch_size=500, seed=0,
             device=torch.device("cpu"), amp=amp)
    assert ran == [True] and seen and not any(seen)


def test_fp16_on_cpu_is_a_one_line_usage_error(tmp_path, capsys, adv_model):
    out = tmp_path / "out"
    assert main([*DEFAULT_JOB, "--precision", "fp16", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("harness: error:") and "fp16" in err and "CUDA" in err
    assert not out.exists()


def test_fp32_default_job_keeps_its_config_hash_and_numbers(tmp_path, adv_model):
    """fp32 (the default) is hashed as before --precision existed: the committed baseline's hash and bytes."""
    from pathlib import Path

    baseline = Path(__file__).resolve().parents[1] / "reports" / "baselines" / "digits_default.csv"
    out = tmp_path / "fp32"
    assert main([*DEFAULT_JOB, "--precision", "fp32", "--out", str(out)]) == 0
    assert (out / "results.csv").read_bytes() == baseline.read_bytes()


def test_certifiers_run_in_fp32(adv_model, digits_test, monkeypatch):
    """A bound computed under autocast is not sound: a certifier's cell runs with autocast off."""
    from harness.core.registry import ATTACKS, DEFENSES
    from harness.engine import evaluate
    from harness.precision import autocast_for

    attack = ATTACKS.create("certify_ibp")
    ran = []
    real_run = type(attack).run
    monkeypatch.setattr(type(attack), "run",
                        lambda self, *a, **k: ran.append(torch.is_autocast_enabled("cpu")) or real_run(self, *a, **k))
    none = Entrant.fixed(DEFENSES.create("none"), [Budget("linf", 0.01)])
    evaluate(adv_model, digits_test.take(10), [("none", none)], [("certify_ibp", attack)],
             batch_size=500, seed=0, device=torch.device("cpu"), amp=autocast_for("bf16", torch.device("cpu")))
    assert ran == [False]


def test_fidelity_n_zero_skips_the_check_and_says_so(tmp_path, adv_model, capsys):
    out = tmp_path / "o"
    assert main(["run", "--attack", "fgsm", "--n", "20", "--precision", "bf16", "--fidelity-n", "0", "--quiet",
                 "--out", str(out)]) == 0
    assert "without a fidelity check" in (out / "results.md").read_text()
    assert "fidelity" not in json.loads((out / "run.json").read_text())
    assert main(["run", "--attack", "fgsm", "--fidelity-n", "-1", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "--fidelity-n" in capsys.readouterr().err
