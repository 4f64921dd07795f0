"""The command-line contract of docs/CONTRACTS.md: outputs, exit codes, one-line errors, reproducibility."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.report import COLUMNS

REPO = Path(__file__).resolve().parents[1]


def run(args, capsys=None):
    code = main(args)
    return code


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, adv_model):
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", "--defense", "none", "--attack", "pgd_linf", "--attack", "fgsm", "--n", "120", "--out", str(out), "--quiet"]) == 0
    return out


def test_run_writes_contract_files(default_run):
    for name in ("results.csv", "results.md", "timings.csv", "run.json", "samples.csv"):
        assert (default_run / name).is_file(), name
    with open(default_run / "results.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[: len(COLUMNS)] == COLUMNS
    r = rows(default_run / "results.csv")
    assert [x["attack"] for x in r] == ["pgd_linf", "fgsm", "worst-case"]
    assert all(x["threat"] == "white-box" and x["n"] == "120" for x in r)
    # the worst case is per sample: never above any single attack
    assert float(r[2]["robust_acc"]) <= min(float(r[0]["robust_acc"]), float(r[1]["robust_acc"]))
    assert float(r[0]["robust_ci_low"]) <= float(r[0]["robust_acc"]) <= float(r[0]["robust_ci_high"])
    assert not list(default_run.glob(".*.tmp"))


def test_worst_case_equals_and_of_samples(default_run):
    s = rows(default_run / "samples.csv")
    per = {}
    for x in s:
        per.setdefault(int(x["index"]), []).append(int(x["robust"]))
    worst = 100 * sum(all(v) for v in per.values()) / len(per)
    r = rows(default_run / "results.csv")[-1]
    assert f"{worst:.2f}" == r["robust_acc"]


def test_worst_case_invalid_counts_samples_saved_by_the_validity_rule(tmp_path, adv_model):
    """The worst-case row's ``invalid``: samples robust over every attack that some attack fooled only with images
    outside B_eps(x_o), each sample once (not the sum over the attacks' rows)."""
    out = tmp_path / "run"
    assert main(["run", "--defense", "preempt", "--attack", "pgd_linf", "--attack", "adaptive_linf", "--n", "30",
                 "--set", "use_autoattack=false", "--set", "maxiter=5", "--out", str(out), "--quiet"]) == 0
    per = {}
    for x in rows(out / "samples.csv"):
        robust, saved = per.get(x["index"], (True, False))
        per[x["index"]] = (robust and x["robust"] == "1", saved or (x["attacked"] == "1" and x["valid"] == "0"))
    r = {x["attack"]: x for x in rows(out / "results.csv")}
    expect = sum(robust and saved for robust, saved in per.values())
    assert int(r["worst-case"]["invalid"]) == expect > 0
    assert expect <= int(r["pgd_linf"]["invalid"]) + int(r["adaptive_linf"]["invalid"])


def test_run_json_records_provenance(default_run):
    info = json.loads((default_run / "run.json").read_text())
    for key in ("config", "config_hash", "seed", "argv", "versions", "device", "git_commit", "started", "finished"):
        assert key in info
    assert info["versions"]["torch"] == torch.__version__
    assert info["config_hash"] == rows(default_run / "results.csv")[0]["config_hash"]
    t = rows(default_run / "timings.csv")
    pgd = next(x for x in t if x["attack"] == "pgd_linf")
    assert 0 < float(pgd["backward_per_sample"]) <= 20 and float(pgd["forward_per_sample"]) <= 22


def test_same_seed_same_bytes_other_seed_other_hash(tmp_path, adv_model):
    args = ["run", "--attack", "pgd_linf", "--n", "64", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a/results.csv").read_bytes() == (tmp_path / "b/results.csv").read_bytes()
    assert main(args + ["--seed", "1", "--out", str(tmp_path / "c")]) == 0
    assert rows(tmp_path / "c/results.csv")[0]["config_hash"] != rows(tmp_path / "a/results.csv")[0]["config_hash"]


def test_set_overrides_reach_the_attack(tmp_path, adv_model):
    out = tmp_path / "o"
    assert main(["run", "--attack", "pgd_linf", "--n", "32", "--set", "steps=3", "--set", "pgd_linf.alpha=0.05",
                 "--out", str(out), "--quiet"]) == 0
    cfg = json.loads((out / "run.json").read_text())["config"]["attacks"][0]
    assert cfg["steps"] == 3 and cfg["alpha"] == 0.05


def test_eps_as_fraction(tmp_path, adv_model):
    out = tmp_path / "o"
    assert main(["run", "--attack", "fgsm", "--eps", "8/255", "--n", "16", "--out", str(out), "--quiet"]) == 0
    assert rows(out / "results.csv")[0]["eps"] == f"{8 / 255:.6g}"


BAD = [
    (["run", "--defense", "nonee"], "did you mean none"),
    (["run", "--attack", "pgd_lnf"], "did you mean pgd_linf"),
    (["run", "--eps", "-0.1"], "eps"),
    (["run", "--eps", "abc"], "eps"),
    (["run", "--eps", "0.1,0.1"], "twice"),
    (["run", "--eps", "0.1,,x"], "eps"),
    (["run", "--defense", "preempt_smooth", "--set", "preempt_smooth.smoothing.sigmaa=1"], "sigmaa"),
    (["run", "--defense", "preempt_smooth", "--set", "preempt_smooth.smoothing.sigma=x"], "sigma"),
    (["run", "--norm", "l3"], "norm"),
    (["run", "--attack", "pgd_linf", "--norm", "l2"], "linf"),
    (["run", "--n", "100000"], "out of range"),
    (["run", "--set", "nosuchparam=3"], "nosuchparam"),
    (["run", "--set", "steps=abc"], "steps"),
    (["run", "--dataset", "mnist"], "--data-dir"),
    (["run", "--model", "resnet18"], "architecture"),
    (["run", "--model", "/no/such/file.pt", "--arch", "small_cnn"], "not found"),
    (["run", "--device", "cuda:0"] if not torch.cuda.is_available() else ["run", "--device", "tpu"], "device"),
    (["list", "gadgets"], "unknown kind"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(args, needle, tmp_path, capsys, adv_model):
    out = tmp_path / "out"
    extra = ["--out", str(out), "--quiet"] if args[0] == "run" else []
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("harness: error:"), err
    assert needle in err
    assert not out.exists()


def test_wrong_checkpoint_and_nan_logits(tmp_path, capsys, adv_model):
    from harness.models.small import SmallCNN

    wrong = tmp_path / "wrong.pt"
    torch.save(SmallCNN(num_classes=3, image_size=8).state_dict(), wrong)
    assert main(["run", "--model", str(wrong), "--arch", "small_cnn", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "shape" in capsys.readouterr().err
    nan = tmp_path / "nan.pt"
    sd = SmallCNN(image_size=8).state_dict()
    sd["classifier.3.bias"][:] = float("nan")
    torch.save(sd, nan)
    assert main(["run", "--model", str(nan), "--arch", "small_cnn", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_checkpoint_path_runs(tmp_path, adv_model):
    ck = tmp_path / "m.pt"
    torch.save(adv_model.state_dict(), ck)
    out = tmp_path / "o"
    assert main(["run", "--model", str(ck), "--arch", "small_cnn", "--n", "16", "--out", str(out), "--quiet"]) == 0
    assert rows(out / "results.csv")[0]["model"] == "m"


def test_traceback_only_with_debug(tmp_path):
    assert main(["run", "--defense", "nonee", "--quiet"]) == 2
    with pytest.raises(Exception):
        main(["run", "--defense", "nonee", "--quiet", "--debug"])


def test_list_shows_plugins_and_params(capsys):
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "pgd_linf" in out and "steps: int = 20" in out
    assert main(["list", "defenses", "preempt_smooth"]) == 0  # a part's parameters under its name, with types
    assert "smoothing.sigma: float = 0.25" in capsys.readouterr().out


def test_check_gate(default_run, tmp_path, capsys):
    res = default_run / "results.csv"
    assert main(["check", "--baseline", str(res), str(res)]) == 0
    bad = rows(res)
    bad[0]["robust_acc"] = f"{float(bad[0]['robust_acc']) - 1.5:.2f}"
    worse = tmp_path / "worse.csv"
    with open(worse, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(bad[0]))
        w.writeheader()
        w.writerows(bad)
    assert main(["check", "--baseline", str(res), str(worse), "--tolerance", "1.0", "--strict"]) == 3
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["check", "--baseline", str(res), str(worse), "--tolerance", "2.0", "--strict"]) == 0
    # the default verdict: a 1.5-point fall at this n is within the attack's noise (tests/test_gate.py: noise)
    assert main(["check", "--baseline", str(res), str(worse), "--tolerance", "1.0"]) == 0
    assert "within noise" in capsys.readouterr().out
    missing = tmp_path / "missing.csv"
    with open(missing, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(bad[0]))
        w.writeheader()
        w.writerows(rows(res)[1:])
    assert main(["check", "--baseline", str(res), str(missing)]) == 3
    assert main(["check", "--baseline", str(tmp_path / "nope.csv"), str(res)]) == 2


def test_module_entry_point_exit_code(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness", "run", "--eps", "-1"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_train_then_run_the_checkpoint(tmp_path):
    ck = tmp_path / "m.pt"
    assert main(["train", "--recipe", "pgd", "--epochs", "1", "--set", "steps=2", "--out", str(ck), "--quiet"]) == 0
    meta = json.loads(Path(str(ck) + ".json").read_text())
    assert meta["recipe"] == "pgd" and meta["arch"] == "small_cnn"
    out = tmp_path / "o"
    assert main(["run", "--model", str(ck), "--arch", "small_cnn", "--attack", "fgsm", "--n", "8", "--out", str(out), "--quiet"]) == 0
    assert main(["train", "--recipe", "nosuch", "--out", str(tmp_path / "x.pt"), "--quiet"]) == 2


def test_train_a_purifier_then_run_it(tmp_path):
    ck = tmp_path / "hgd.pt"
    assert main(["train", "--defense", "hgd", "--target-model", "digits_cnn_adv", "--epochs", "1", "--out", str(ck), "--quiet"]) == 0
    assert json.loads(Path(str(ck) + ".json").read_text())["defense"] == "hgd"
    out = tmp_path / "o"
    assert main(["run", "--defense", "hgd", "--set", f"hgd.checkpoint={ck}", "--attack", "fgsm", "--n", "8",
                 "--out", str(out), "--quiet"]) == 0
    assert rows(out / "results.csv")[0]["defense"] == "hgd"
    assert main(["train", "--defense", "preempt", "--out", str(tmp_path / "x.pt"), "--quiet"]) == 2
