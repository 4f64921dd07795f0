"""The regression gate (issue 25): content-keyed rows, comparability, noise-aware verdicts, bad input, outputs.

Every file here is made by hand: results.csv rows with the content columns (model_sha256, data_fingerprint,
subset, n, seed) and, where a test needs the paired test, a samples.csv of per-sample verdicts beside it.
"""
from __future__ import annotations

import csv
import json
import random
import xml.etree.ElementTree as ET

import pytest

from harness.cli import main
from harness.gate import compare

SHA_A, SHA_B = "a" * 64, "b" * 64
COLUMNS = ["dataset", "model", "defense", "attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc",
           "robust_ci_low", "robust_ci_high", "seed", "config_hash", "model_sha256", "data_fingerprint", "subset",
           "flags"]


def verdicts(n: int, k: int, rng: random.Random) -> list[int]:
    v = [1] * k + [0] * (n - k)
    rng.shuffle(v)
    return v


def write_run(folder, robust: dict, clean: list[int], *, model="m", sha=SHA_A, data="f" * 16, subset="all", seed=0,
              samples=True, flags=None, columns=COLUMNS, name="results.csv"):
    """A run folder: ``robust`` maps attack -> per-sample verdicts at eps 0.1 (the worst case is their AND)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(clean)
    worst = [int(all(v[i] for v in robust.values())) for i in range(n)]
    rows = []
    for attack, v in [*robust.items(), ("worst-case", worst)]:
        rows.append({"dataset": "digits", "model": model, "defense": "none", "attack": attack, "threat": "white-box",
                     "norm": "linf", "eps": "0.1", "n": n, "clean_acc": f"{100 * sum(clean) / n:.2f}",
                     "robust_acc": f"{100 * sum(v) / n:.2f}", "robust_ci_low": "", "robust_ci_high": "", "seed": seed,
                     "config_hash": "c", "model_sha256": sha, "data_fingerprint": data, "subset": subset,
                     "flags": (flags or {}).get(attack, "")})
    path = folder / name
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    if samples:
        stem = "samples.csv" if name == "results.csv" else name.replace(".csv", ".samples.csv")
        with (folder / stem).open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["index", "label", "defense", "attack", "eps", "clean", "robust", "attacked", "valid", "dist"])
            for attack, v in robust.items():
                for i in range(n):
                    w.writerow([i, i % 10, "none", attack, "0.1", clean[i], v[i], clean[i], 1, "0.1"])
    return path


def pair(tmp_path, n, k_base, lost, gained, seed_now=0, samples=True, **kw):
    """A baseline with ``k_base`` of ``n`` robust, and results where ``lost`` of them fell and ``gained`` rose."""
    rng = random.Random(1)
    clean = [1] * n
    base = verdicts(n, k_base, rng)
    now = list(base)
    ones, zeros = [i for i in range(n) if base[i]], [i for i in range(n) if not base[i]]
    for i in rng.sample(ones, lost):
        now[i] = 0
    for i in rng.sample(zeros, gained):
        now[i] = 1
    b = write_run(tmp_path / "base", {"pgd": base}, clean, samples=samples)
    r = write_run(tmp_path / "now", {"pgd": now}, clean, seed=seed_now, samples=samples, **kw)
    return str(b), str(r)


def check(*args):
    return main(["check", *map(str, args)])


# Noise-aware verdicts ------------------------------------------------------------------------------------------


def test_an_unchanged_model_under_another_seed_passes_at_n50(tmp_path, capsys):
    """Attack noise at n = 50: 5 samples flip down, 2 up (a 6-point fall) -- not significant; --strict fails it."""
    b, r = pair(tmp_path, 50, 30, lost=5, gained=2, seed_now=1)
    assert check("--baseline", b, r) == 2  # another seed is refused unless allowed
    assert "seed 0 in the baseline, 1 in the results" in capsys.readouterr().err
    assert check("--baseline", b, r, "--allow-seed-change") == 0
    out = capsys.readouterr().out
    assert "mcnemar" in out and "within noise" in out and "no regression" in out
    assert check("--baseline", b, r, "--allow-seed-change", "--strict") == 3


def test_a_planted_5_point_drop_at_n1000_fails(tmp_path, capsys):
    b, r = pair(tmp_path, 1000, 500, lost=60, gained=10)
    assert check("--baseline", b, r) == 3
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "mcnemar" in out
    b2, r2 = pair(tmp_path / "unpaired", 1000, 500, lost=60, gained=10, samples=False)
    assert check("--baseline", b2, r2) == 3  # the Clopper-Pearson intervals separate too
    assert "clopper-pearson" in capsys.readouterr().out


def test_a_half_point_drop_within_noise_passes(tmp_path):
    for sub, samples in (("p", True), ("u", False)):
        b, r = pair(tmp_path / sub, 1000, 500, lost=15, gained=10, samples=samples)
        assert check("--baseline", b, r, "--tolerance", "0") == 0
        assert check("--baseline", b, r, "--tolerance", "0", "--strict") == 3
        o = compare(b, r, tolerance=0)
        line = next(ln for ln in o.lines if ln.key["attack"] == "pgd" and ln.metric == "robust_acc")
        assert line.status == "within noise" and line.change == pytest.approx(-0.5)
        assert line.test == ("mcnemar" if samples else "clopper-pearson")


def test_mcnemar_counts_the_flips_and_the_worst_case_is_the_and_over_attacks(tmp_path):
    rng = random.Random(3)
    clean = [1] * 40
    a, p = verdicts(40, 30, rng), verdicts(40, 25, rng)
    b = write_run(tmp_path / "b", {"fgsm": a, "pgd": p}, clean)
    p2 = list(p)
    fell = [i for i in range(40) if p[i] and a[i]][:3]
    for i in fell:
        p2[i] = 0
    r = write_run(tmp_path / "r", {"fgsm": a, "pgd": p2}, clean)
    o = compare(str(b), str(r))
    got = {(ln.key["attack"], ln.metric): ln for ln in o.lines}
    assert (got["pgd", "robust_acc"].lost, got["pgd", "robust_acc"].gained) == (3, 0)
    assert (got["worst-case", "robust_acc"].lost, got["worst-case", "robust_acc"].gained) == (3, 0)
    assert got["fgsm", "robust_acc"].p_value == 1.0 and got["worst-case", "robust_acc"].test == "mcnemar"


# Content keys and comparability --------------------------------------------------------------------------------


def test_a_renamed_checkpoint_gets_the_same_verdict(tmp_path, capsys):
    b, r = pair(tmp_path, 200, 120, lost=30, gained=0)
    renamed = write_run(tmp_path / "renamed", {"pgd": _column(r, "pgd")}, [1] * 200, model="model_v2")
    assert check("--baseline", b, r, "--format", "json") == 3
    before = json.loads(capsys.readouterr().out)
    assert check("--baseline", b, renamed, "--format", "json") == 3
    after = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in before["cells"]] == [c["status"] for c in after["cells"]]
    assert "MISSING" not in {c["status"] for c in after["cells"]}


def _column(results_csv, attack):
    """The robust verdicts of ``attack`` from the samples.csv beside ``results_csv``."""
    from pathlib import Path

    with (Path(results_csv).parent / "samples.csv").open() as fh:
        return [int(r["robust"]) for r in csv.DictReader(fh) if r["attack"] == attack]


def test_other_weights_under_the_same_name_are_incomparable_unless_allowed(tmp_path, capsys):
    b, r = pair(tmp_path, 100, 60, lost=0, gained=0, sha=SHA_B)
    assert check("--baseline", b, r) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and "model_sha256" in err and "--allow-model-change" in err
    assert check("--baseline", b, r, "--allow-model-change") == 0
    assert "model_sha256 changed" in capsys.readouterr().out


@pytest.mark.parametrize("kw, what", [({"data": "e" * 16}, "data_fingerprint"), ({"subset": "first"}, "subset")])
def test_other_data_or_subset_is_incomparable(tmp_path, capsys, kw, what):
    b, r = pair(tmp_path, 100, 60, lost=0, gained=0, **kw)
    assert check("--baseline", b, r, "--allow-model-change", "--allow-seed-change") == 2
    assert what in capsys.readouterr().err


def test_another_n_is_incomparable(tmp_path, capsys):
    b = write_run(tmp_path / "b", {"pgd": [1] * 30 + [0] * 20}, [1] * 50)
    r = write_run(tmp_path / "r", {"pgd": [1] * 200 + [0] * 160}, [1] * 360)
    assert check("--baseline", b, r) == 2
    assert "n 50 in the baseline, 360 in the results" in capsys.readouterr().err


def test_a_content_column_in_one_file_only_is_refused_and_in_neither_skipped(tmp_path, capsys):
    old = [c for c in COLUMNS if c not in ("model_sha256", "data_fingerprint", "subset")]
    b = write_run(tmp_path / "b", {"pgd": [1] * 30 + [0] * 20}, [1] * 50, columns=old)
    r = write_run(tmp_path / "r", {"pgd": [1] * 30 + [0] * 20}, [1] * 50)
    assert check("--baseline", b, r) == 2
    assert "only" in capsys.readouterr().err
    r_old = write_run(tmp_path / "r_old", {"pgd": [1] * 30 + [0] * 20}, [1] * 50, model="other_name", columns=old)
    assert check("--baseline", b, r_old) == 0


def test_today_baselines_still_check(tmp_path):
    """The committed baselines (without the content columns) pass against themselves; the CI command works."""
    assert check("--baseline", "reports/baselines/digits_default.csv", "reports/baselines/digits_default.csv") == 0
    assert check("--baseline", "reports/baselines/zoo_digits.csv", "reports/baselines/zoo_digits.csv") == 0


def test_several_models_in_one_file_are_told_apart_by_their_hash(tmp_path):
    b = write_run(tmp_path / "b", {"pgd": [1] * 30 + [0] * 20}, [1] * 50)
    rows = list(csv.DictReader(b.open()))
    more = [{**r, "model": "other", "model_sha256": SHA_B, "robust_acc": "10.00"} for r in rows]
    for path, extra in ((tmp_path / "two.csv", more), (tmp_path / "two_renamed.csv",
                                                       [{**r, "model": "renamed"} for r in more])):
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows + extra)
    o = compare(str(tmp_path / "two.csv"), str(tmp_path / "two_renamed.csv"))
    assert o.exit_code == 0 and len(o.lines) == 8 and all("model_sha256" in ln.key for ln in o.lines)


# Bad input -----------------------------------------------------------------------------------------------------


def _edit(path, attack, column, value):
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        if r["attack"] == attack:
            r[column] = value
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("value, reason", [("nan", "is nan"), ("", "is blank"), ("abc", "is not a number"),
                                           ("101", "outside [0, 100]"), ("-3", "outside [0, 100]")])
@pytest.mark.parametrize("side", ["base", "now"])
def test_bad_values_are_refused(tmp_path, capsys, value, reason, side):
    b, r = pair(tmp_path, 50, 30, lost=0, gained=0)
    _edit(b if side == "base" else r, "pgd", "robust_acc", value)
    assert check("--baseline", b, r) == 2
    err = capsys.readouterr().err
    assert reason in err and "robust_acc" in err and len(err.strip().splitlines()) == 1


def test_an_empty_baseline_is_refused(tmp_path, capsys):
    b, r = pair(tmp_path, 50, 30, lost=0, gained=0)
    with open(b) as fh:
        header = fh.readline()
    with open(b, "w") as fh:
        fh.write(header)
    assert check("--baseline", b, r) == 2
    assert "no rows" in capsys.readouterr().err


def test_a_duplicated_cell_and_a_missing_file_are_refused(tmp_path, capsys):
    b, r = pair(tmp_path, 50, 30, lost=0, gained=0)
    lines = open(b).read().splitlines()
    with open(b, "w") as fh:
        fh.write("\n".join(lines + [lines[1]]) + "\n")
    assert check("--baseline", b, r) == 2
    assert "two rows for the same cell" in capsys.readouterr().err
    assert check("--baseline", tmp_path / "nope.csv", r) == 2
    assert check("--baseline", r, r, "--alpha", "1.5") == 2


def test_other_labels_in_the_samples_are_other_data(tmp_path, capsys):
    b, r = pair(tmp_path, 50, 30, lost=0, gained=0)
    sp = tmp_path / "now" / "samples.csv"
    rows = list(csv.DictReader(sp.open()))
    rows[0]["label"] = "9" if rows[0]["label"] != "9" else "8"
    with sp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    assert check("--baseline", b, r) == 2
    assert "labels" in capsys.readouterr().err


def test_results_sharing_no_cell_with_the_baseline_are_incomparable(tmp_path, capsys):
    b = write_run(tmp_path / "b", {"fgsm": [1] * 50}, [1] * 50)
    rows = list(csv.DictReader(b.open()))
    other = tmp_path / "other.csv"
    with other.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows([{**r, "eps": "0.3"} for r in rows])
    assert check("--baseline", b, other) == 2
    assert "no cell of the baseline" in capsys.readouterr().err


def test_a_missing_cell_fails_and_a_run_folder_is_accepted(tmp_path, capsys):
    write_run(tmp_path / "b", {"fgsm": [1] * 50, "pgd": [1] * 30 + [0] * 20}, [1] * 50)
    write_run(tmp_path / "r", {"pgd": [1] * 30 + [0] * 20}, [1] * 50)
    assert check("--baseline", tmp_path / "b", tmp_path / "r") == 3
    assert "MISSING" in capsys.readouterr().out


# Outputs -------------------------------------------------------------------------------------------------------


def test_json_report_junit_and_github(tmp_path, capsys, monkeypatch):
    rng = random.Random(0)
    clean = [1] * 1000
    fg, pg = verdicts(1000, 600, rng), verdicts(1000, 500, rng)
    b = write_run(tmp_path / "b", {"fgsm": fg, "pgd": pg}, clean)
    drop = lambda v: [0 if i < 100 else x for i, x in enumerate(v)]  # noqa: E731
    r = write_run(tmp_path / "r", {"fgsm": drop(fg), "pgd": drop(pg)}, clean, flags={"pgd": "flat-in-eps"})
    report = tmp_path / "out" / "gate.json"
    (tmp_path / "out").mkdir()
    assert check("--baseline", b, r, "--report", report) == 3
    text = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["verdict"] == "regression" and data["exit_code"] == 3 and data["regressions"] == 3
    assert {c["status"] for c in data["cells"]} == {"ok", "REGRESSION"}
    assert data["flags"] == [{"cell": "none/pgd/white-box linf 0.1", "flags": "flat-in-eps"}]
    assert "warning: masking flag on none/pgd/white-box linf 0.1: flat-in-eps" in text

    assert check("--baseline", b, r, "--format", "junit") == 3
    root = ET.fromstring(capsys.readouterr().out)
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert root.tag == "testsuites" and int(suite.get("tests")) == len(cases) == 7
    assert int(suite.get("failures")) == 3 == sum(c.find("failure") is not None for c in cases)

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert check("--baseline", b, r, "--format", "github") == 3
    out = capsys.readouterr().out.splitlines()
    errors = [ln for ln in out if ln.startswith("::error")]
    assert len(errors) == 3  # one per regressed cell: fgsm, pgd, worst-case (robust_acc each)
    assert sum(ln.startswith("::warning") for ln in out) == 1
    assert "Robustness gate: FAILED" in summary.read_text()

    assert check("--baseline", b, r, "--fail-on-flags", "--tolerance", "100") == 3
    assert check("--baseline", b, r, "--tolerance", "100") == 0


def test_an_unwritable_report_is_refused_before_any_work(tmp_path, capsys):
    b, r = pair(tmp_path, 50, 30, lost=0, gained=0)
    assert check("--baseline", b, r, "--report", "/proc/gate.json") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--report" in captured.err


def test_check_help_documents_the_gate(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = capsys.readouterr().out
    for word in ("--alpha", "--strict", "--allow-model-change", "--allow-seed-change", "--format", "--report",
                 "--fail-on-flags", "McNemar", "Clopper-Pearson", "exit codes", "model_sha256", "GITHUB_STEP_SUMMARY"):
        assert word in text, word


# The pytest helper ---------------------------------------------------------------------------------------------


def test_assert_robust_raises_with_the_gates_table(tmp_path):
    from harness.core.errors import UsageError
    from harness.testing import assert_robust

    b, r = pair(tmp_path, 1000, 500, lost=60, gained=10)
    with pytest.raises(AssertionError) as err:
        assert_robust(r, baseline=b)
    assert "REGRESSION" in str(err.value) and "none/pgd/white-box linf 0.1" in str(err.value)
    ok = assert_robust(b, baseline=b, min_robust_acc=40)
    assert ok.exit_code == 0 and len(ok.lines) == 4
    with pytest.raises(AssertionError, match="below its floor"):
        assert_robust(r, min_robust_acc={"pgd": 46})
    assert_robust(r, min_robust_acc={"pgd": 44})
    with pytest.raises(AssertionError, match="do not have: square"):
        assert_robust(r, min_robust_acc={"square": 1})
    b2, r2 = pair(tmp_path / "other", 100, 60, lost=0, gained=0, sha=SHA_B)
    with pytest.raises(UsageError, match="model_sha256"):
        assert_robust(r2, baseline=b2)
    assert assert_robust(r2, baseline=b2, allow_model_change=True).exit_code == 0


def test_the_ci_workflow_example_uses_valid_commands():
    """docs/ci/robustness.yml: valid YAML whose harness commands parse with today's command line."""
    import shlex
    from pathlib import Path

    from harness.commands.parser import build_parser

    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "ci" / "robustness.yml").read_text())
    steps = doc["jobs"]["gate"]["steps"]
    commands = [shlex.split(s["run"].replace("$RUN", "/tmp/run")) for s in steps if "-m harness" in s.get("run", "")]
    assert [c[3] for c in commands] == ["run", "check"]
    for c in commands:
        build_parser().parse_args(c[3:])
    check_args = build_parser().parse_args(commands[1][3:])
    assert check_args.format == "github" and check_args.report and not check_args.strict
    assert any(s.get("uses", "").startswith("actions/upload-artifact") and s.get("if") == "always()" for s in steps)


# End to end, with real runs -------------------------------------------------------------------------------------


def _checkpoint(zoo_name, path):
    import torch

    from harness.models.zoo import load_zoo
    from harness.plugins import load_builtins

    load_builtins()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_zoo(zoo_name).state_dict(), path)
    return path


def _run(model_path, out):
    assert main(["run", "--model", str(model_path), "--arch", "small_cnn", "--attack", "fgsm", "--n", "60",
                 "--quiet", "--out", str(out)]) == 0
    return out / "results.csv"


def test_a_renamed_checkpoint_passes_the_gate_end_to_end(tmp_path, capsys):
    """The same weights under another file name: every cell is matched (none MISSING) and paired: no sample
    flipped."""
    import shutil

    first = _checkpoint("digits_cnn", tmp_path / "model.pt")
    renamed = tmp_path / "model_v2.pt"
    shutil.copy(first, renamed)
    base, now = _run(first, tmp_path / "a"), _run(renamed, tmp_path / "b")
    assert list(csv.DictReader(now.open()))[0]["model"] == "model_v2"
    assert check("--baseline", base, now, "--format", "json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["status"] for c in data["cells"]} == {"ok"} and len(data["cells"]) == 4
    assert all(c["test"] == "mcnemar" and c["lost"] == c["gained"] == 0 for c in data["cells"])


def test_other_weights_under_the_same_name_are_refused_end_to_end(tmp_path, capsys):
    base = _run(_checkpoint("digits_cnn", tmp_path / "a" / "model.pt"), tmp_path / "ra")
    now = _run(_checkpoint("digits_cnn_adv", tmp_path / "b" / "model.pt"), tmp_path / "rb")
    if "model_sha256" not in next(csv.DictReader(now.open())):
        pytest.skip("results.csv has no model_sha256 column yet (written by the run-spec work)")
    assert check("--baseline", base, now) == 2
    assert "model_sha256" in capsys.readouterr().err
    code = check("--baseline", base, now, "--allow-model-change", "--format", "json")
    data = json.loads(capsys.readouterr().out)
    assert code == data["exit_code"] and "model_sha256 changed" in data["notes"][0]
    fgsm = next(c for c in data["cells"] if c["key"]["attack"] == "fgsm" and c["metric"] == "robust_acc")
    assert fgsm["change"] > 0  # the adversarially trained weights: judged, and more robust
