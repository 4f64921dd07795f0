"""The public Python API and the run spec (issue: your model, your data, from Python).

Each test states the contract it checks: the Python API and the command line give the same bytes; a run folder
reads back; a run rebuilds from its run.json; a grid cell is a run; labels are names only; the config hash
covers the weights; subsets are stratified; and bad input is one line, exit 2.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
from harness.cli import main
from harness.data.base import ImageSet
from harness.data.subset import select, stratified
from harness.spec import PluginSpec, RunSpec

REPO = Path(__file__).resolve().parents[1]
FACTORY = "tests/fixtures/user_model.py:factory"
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from user_model import factory  # noqa: E402


def run(tmp_path: Path, name: str, *flags: str) -> Path:
    out = tmp_path / name
    assert main(["run", *flags, "--out", str(out), "--quiet"]) == 0
    return out


def csv_text(out: Path) -> str:
    return (out / "results.csv").read_text()


def test_readme_quick_start_runs_as_written(tmp_path):
    """The first ```python block of the README that imports harness runs as written."""
    text = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import harness" in b]
    assert blocks, "README.md has no Python quick start"
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Worst case" in done.stdout


def test_python_api_equals_the_command_line_byte_for_byte(tmp_path):
    """harness.evaluate on a module defined in the user's file = harness run --model FILE.py:factory."""
    cli = run(tmp_path, "cli", "--model", FACTORY, "--attack", "fgsm", "--attack", "pgd_linf", "--n", "60")
    py = harness.evaluate(factory(), "digits", attacks=["fgsm", "pgd_linf"], n=60)
    py.save(tmp_path / "py")
    assert csv_text(tmp_path / "py") == csv_text(cli)
    rows = [r for r in py.rows if r["attack"] == "worst-case"]
    assert 5 < float(rows[0]["robust_acc"]) < 95  # away from 0% and 100%


def test_results_save_and_load_round_trip(tmp_path):
    res = harness.evaluate("digits_cnn_adv", "digits", attacks=["fgsm", ("mine", "pgd_linf", {"steps": 5})],
                           eps=[0.05, 0.1], n=40)
    first = res.save(tmp_path / "a")
    back = harness.load_results(first)
    assert back.rows == res.rows and back.table() == res.table() and back.config_hash == res.config_hash
    assert back.worst_case("none", 0.1) == res.worst_case("none", 0.1)
    assert sum(res.worst_case("none", 0.1)) == round(0.4 * float(res.robust_accuracy("none", 0.1)))
    back.save(tmp_path / "b")
    for name in ("results.csv", "results.md", "run.json", "samples.csv", "indices.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert back.spec == res.spec


def test_from_run_json_reproduces_the_run(tmp_path):
    first = run(tmp_path, "first", "--attack", "fgsm", "--attack", "dlr=pgd_linf", "--set", "dlr.loss=dlr",
                "--eps", "0.05", "--eps", "0.1", "--n", "30", "--subset", "first")
    again = run(tmp_path, "again", "--from", str(first / "run.json"))
    assert csv_text(again) == csv_text(first)
    assert len([r for r in csv_text(first).splitlines() if ",worst-case," in r]) == 2  # --eps accumulates


def test_grid_cell_is_the_single_run_of_its_spec(tmp_path):
    from harness.build import build
    from harness.grid import load_grid

    toml = tmp_path / "g.toml"
    toml.write_text('[axes]\ndefense = ["none"]\nattack = ["fgsm"]\nseed = [0, 1]\n[settings]\nn = 30\n')
    cell = load_grid(toml).cells[1]
    build(cell.run_spec()).execute().save(tmp_path / "cell")
    single = run(tmp_path, "single", "--attack", "fgsm", "--seed", "1", "--n", "30")
    assert csv_text(tmp_path / "cell") == csv_text(single)


def test_relabelling_changes_no_number(tmp_path):
    plain = run(tmp_path, "plain", "--attack", "pgd_linf", "--n", "40")
    labelled = run(tmp_path, "labelled", "--defense", "base=none", "--attack", "strong=pgd_linf", "--n", "40")
    strip = lambda text: [line.split(",")[6:13] for line in text.splitlines()]  # noqa: E731 - eps .. seed
    assert strip(csv_text(plain)) == strip(csv_text(labelled))
    seeded = PluginSpec.of("pgd_linf", {"steps": 5}, "a"), PluginSpec.of("pgd_linf", {"steps": 5}, "b")
    assert seeded[0].identity == seeded[1].identity != PluginSpec.of("pgd_linf").identity == "pgd_linf"


def test_config_hash_covers_the_weights_not_the_file_name(tmp_path):
    a, b = harness.load_model("digits_cnn"), harness.load_model("digits_cnn_adv")
    for name, m in (("a.pt", a), ("b.pt", b), ("a_renamed.pt", a)):
        torch.save(m.state_dict(), tmp_path / name)
    hashes = {}
    for name in ("a.pt", "b.pt", "a_renamed.pt"):
        out = run(tmp_path, name[:-3], "--model", str(tmp_path / name), "--arch", "small_cnn", "--attack", "fgsm",
                  "--n", "20")
        info = json.loads((out / "run.json").read_text())
        hashes[name] = info["config_hash"], info["model_sha256"]
    assert hashes["a.pt"] == hashes["a_renamed.pt"] and hashes["a.pt"][0] != hashes["b.pt"][0]
    assert hashes["a.pt"][1] != hashes["b.pt"][1]


def test_n_draws_a_stratified_subset_and_writes_its_indices(tmp_path):
    y = torch.arange(10).repeat_interleave(30)  # a class-ordered folder
    data = ImageSet(torch.zeros(300, 1, 2, 2), y, tuple("abcdefghij"), "sorted")
    chosen, idx, rule = select(data, 20)
    assert rule == "stratified" and len(set(chosen.y.tolist())) >= 8 and idx.tolist() == sorted(idx.tolist())
    assert torch.equal(stratified(y, 20, 0), stratified(y, 20, 0)) and not torch.equal(stratified(y, 20, 0), stratified(y, 20, 1))
    assert set(select(data, 20, "first")[0].y.tolist()) == {0}
    out = run(tmp_path, "strat", "--attack", "fgsm", "--n", "20")
    written = [int(i) for i in (out / "indices.txt").read_text().split()]
    info = json.loads((out / "run.json").read_text())
    assert len(written) == 20 and info["subset"]["rule"] == "stratified" and info["subset"]["indices_sha256"]
    mine = tmp_path / "idx.txt"
    mine.write_text("\n".join(map(str, written[:7])) + "\n")
    own = run(tmp_path, "own", "--attack", "fgsm", "--indices", str(mine))
    assert ",7," in csv_text(own).splitlines()[1] and ",indices:" in csv_text(own).splitlines()[1]


def test_run_spec_round_trips_through_json():
    spec = RunSpec(defenses=(PluginSpec.of("preempt", {"maxiter": 3}, "ours"),),
                   attacks=(PluginSpec.of("bpda", {"inner": "ta.CW", "inner.c": 10.0}),), eps=(0.05, 0.1))
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and hash(again) == hash(spec)


@pytest.mark.parametrize("flags, says", [
    (["--eps", "0.1,,0.2"], "--eps expects"),
    (["--eps", "0.1", "--eps", "0.1"], "given twice"),
    (["--indices", "MISSING.txt"], "no such file"),
    (["--from", "MISSING.json"], "no such file"),
    (["--model", "tests/fixtures/user_model.py:not_a_module"], "nn.Module"),
    (["--model", "tests/fixtures/nothing_here.py:factory"], "nothing_here.py"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, says):
    out = tmp_path / "out"
    assert main(["run", *flags, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and not out.exists()


def test_bad_indices_file(tmp_path, capsys):
    for text, says in (("1\n1\n", "given twice"), ("5000\n", "out of range"), ("x\n", "not a list of integers")):
        f = tmp_path / "i.txt"
        f.write_text(text)
        assert main(["run", "--indices", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        assert says in capsys.readouterr().err


def test_from_refuses_other_flags(tmp_path, capsys):
    first = run(tmp_path, "first", "--attack", "fgsm", "--n", "10")
    assert main(["run", "--from", str(first / "run.json"), "--n", "20", "--out", str(tmp_path / "x")]) == 2
    assert "--n cannot be given" in capsys.readouterr().err


def test_n_on_the_class_ordered_cifar_folder_spans_the_classes():
    shared = REPO.parent / "shared" / "data"
    if not (shared / "cifar10_test_images").is_dir():
        pytest.skip(f"needs the CIFAR-10 test images in {shared} (absent)")
    _, y = harness.load_data("cifar10", data_dir=str(shared), n=20)
    assert len(set(y.tolist())) >= 8
    _, first = harness.load_data("cifar10", data_dir=str(shared), n=20, subset="first")
    assert len(set(first.tolist())) == 1  # what --n used to do: 20 airplanes


def test_objects_that_satisfy_the_contracts_run_as_their_registered_names():
    from harness.core.registry import ATTACKS, DEFENSES

    by_name = harness.evaluate("digits_cnn_adv", "digits", defenses=["quantize"], attacks=["fgsm"], n=40)
    by_object = harness.evaluate("digits_cnn_adv", "digits", defenses=[("quantize", DEFENSES.create("quantize"))],
                                 attacks=[ATTACKS.create("fgsm")], n=40)
    nums = lambda res: [(r["attack"] == "worst-case", r["clean_acc"], r["robust_acc"]) for r in res.rows]  # noqa: E731
    assert nums(by_object) == nums(by_name) and 0 < float(by_name.robust_accuracy()) < 100
    assert [r["attack"] for r in by_object.rows] == ["FGSM", "worst-case"]  # an object is shown by its class name
