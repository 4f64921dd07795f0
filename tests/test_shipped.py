"""The shipped weights: present, checked against their sha256, never retrained, and giving the recorded numbers.

The zoo table (docs/results) and the CI baseline rest on them; a second CPU kernel dispatch (``ATEN_CPU_CAPABILITY``,
which emulates another CPU on this one) must pass the regression gate with them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import defenses.a5.preemptive as a5_mod
import defenses.defense_gan as defense_gan_mod
import defenses.magnet as magnet_mod
import defenses.purifiers.training as purifier_training
from harness.core import artifacts
from harness.core.registry import ZOO
from harness.models.zoo import artifact_name, load_zoo
from harness.plugins import load_builtins

ROOT = Path(__file__).resolve().parents[1]
load_builtins()
SHIPPED = [n for n in ZOO.list() if ZOO.create(n).shipped]


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    return tmp_path


DEFENSE_ARTIFACTS = {**purifier_training.SHIPPED, **magnet_mod.SHIPPED, **defense_gan_mod.SHIPPED, **a5_mod.SHIPPED}


def test_the_readme_and_ci_models_are_shipped():
    assert {"digits_cnn", "digits_cnn_adv", "digits_cnn_adv_l2", "digits_cnn_gauss", "digits_cnn_preempt"} <= set(SHIPPED)
    shipped_files = {p.name for p in artifacts.SHIPPED_DIR.glob("*.pt")}
    recorded = {f"{artifact_name(n, ZOO.create(n))}.pt" for n in SHIPPED} | {f"{a}.pt" for a in DEFENSE_ARTIFACTS}
    assert shipped_files == recorded  # no stray or missing file


def test_the_zoo_page_states_what_ships():
    """docs/results/zoo.md's "What ships" paragraph gives the file count and total size of harness/weights."""
    import re

    files = list(artifacts.SHIPPED_DIR.glob("*.pt"))
    mnist = [p for p in files if "mnist" in p.name]
    page = (ROOT / "docs" / "results" / "zoo.md").read_text()
    stated = re.search(r"holds (\d+) files, ([\d.]+) MB: the MNIST tables' (\d+) \(([\d.]+) MB", page)
    assert stated, "zoo.md lost its 'What ships' paragraph"
    size = {k: f"{sum(p.stat().st_size for p in ps) / 1e6:.1f}" for k, ps in (("all", files), ("mnist", mnist))}
    assert stated.groups() == (str(len(files)), size["all"], str(len(mnist)), size["mnist"])


@pytest.mark.parametrize("artifact", sorted(DEFENSE_ARTIFACTS))
def test_shipped_defense_weights_match_their_sha256(artifact):
    path = artifacts.shipped_file(artifact, DEFENSE_ARTIFACTS[artifact])
    assert set(torch.load(path, map_location="cpu", weights_only=True))  # a state dict of tensors


def test_the_default_purifier_and_autoencoder_load_without_training(empty_cache):
    """The digits defenses of docs/results' tables take the shipped weights: nothing is trained or cached."""
    from harness.core.registry import DEFENSES

    for name in ("jatp", "hgd", "nrp", "defense_gan"):
        DEFENSES.create(name)
    DEFENSES.create("magnet")
    assert list(empty_cache.iterdir()) == []


def test_the_mnist_generator_loads_without_training(empty_cache, shared_data):
    """Defense-GAN's MNIST generator (docs/results/defense-gan.md's MNIST table) is shipped, not trained on first use."""
    from harness.core.registry import DEFENSES

    defense = DEFENSES.create("defense_gan", dataset="mnist", data_dir=str(shared_data))
    assert "weights from shipped:defense-gan-mnist-" in defense.extra_repr()
    assert list(empty_cache.iterdir()) == []


def test_the_mnist_purifiers_load_without_training(empty_cache, shared_data):
    """The MNIST purifiers of docs/results/purifiers.md (reports/grids/purifiers_mnist*.toml: against mnist_cnn_adv,
    JATP with train_epochs=4) are shipped, not trained on first use."""
    from harness.core.registry import DEFENSES

    for name, kw in (("hgd", {}), ("nrp", {}), ("jatp", {"train_epochs": 4})):
        defense = DEFENSES.create(name, target="mnist_cnn_adv", dataset="mnist", data_dir=str(shared_data), **kw)
        assert "weights from shipped:purifier-" in defense.extra_repr(), name
    assert list(empty_cache.iterdir()) == []


def test_the_mnist_a5_networks_load_without_training(empty_cache, shared_data):
    """The A5/R and A5/RC networks of docs/results/a5.md's Tables 4-5 (the settings of reports/grids/a5_mnist_r.toml,
    for the shipped mnist_a5_cnn_c03 at eps_A 0.3, and of a5_mnist_r01.toml, for mnist_a5_cnn_c01 at eps_A 0.1),
    and the shifted A5/RC of a5_mnist_rc_tuning.toml, are shipped, not trained on first use."""
    from harness.core.registry import DEFENSES

    settings = {"epochs": 30, "batch_size": 100, "lr": 1e-3, "milestones": (25, 28), "start": 2, "length": 8}
    cases = [(model, eps, name, delta, {"augment_pad": 0} if name == "a5_co" else {})
             for model, eps in (("mnist_a5_cnn_c03", 0.3), ("mnist_a5_cnn_c01", 0.1))
             for name in ("a5_robustifier", "a5_co") for delta in (0.1, 0.3)]
    cases.append(("mnist_a5_cnn_c03", 0.3, "a5_co", 0.1, {"augment_pad": 4}))
    models = {}
    for model, eps, name, delta, extra in cases:
        models.setdefault(model, load_zoo(model, data_dir=str(shared_data)))
        defense = DEFENSES.create(name, eps=eps, delta=delta, dataset="mnist", data_dir=str(shared_data),
                                  **settings, **extra)
        defense.networks(models[model])
        artifact = "a5-rc-mnist-" if name == "a5_co" else "a5-r-mnist-"
        assert defense.describe()["weights"].startswith(f"shipped:{artifact}"), (model, name, delta, extra)
    assert list(empty_cache.iterdir()) == []


def test_the_digits_a5_networks_load_without_training(empty_cache):
    """The eight A5/R and A5/RC networks of docs/results/a5.md's digits tables (reports/grids/a5_digits.toml: the
    defaults, eps_A 0.1, eps_D 0.1 and 0.3, for both shipped classifiers) are shipped, not trained on first use."""
    from harness.core.registry import DEFENSES

    for model in ("digits_a5_cnn_c0", "digits_a5_cnn_c01"):
        classifier = load_zoo(model)
        for name in ("a5_robustifier", "a5_co"):
            for delta in (0.1, 0.3):
                defense = DEFENSES.create(name, eps=0.1, delta=delta)
                defense.networks(classifier)
                artifact = "a5-rc-digits-" if name == "a5_co" else "a5-r-digits-"
                assert defense.describe()["weights"].startswith(f"shipped:{artifact}"), (model, name, delta)
    assert list(empty_cache.iterdir()) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_match_their_sha256_and_load_without_training(name, empty_cache, request):
    spec = ZOO.create(name)
    path = artifacts.shipped_file(artifact_name(name, spec), spec.sha256)
    assert artifacts.sha256_file(path) == spec.sha256
    data_dir = None if spec.dataset == "digits" else str(request.getfixturevalue("shared_data"))  # MNIST: its files
    model = load_zoo(name, data_dir=data_dir)
    assert list(empty_cache.iterdir()) == []  # loaded, not trained and cached
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_damaged_shipped_file_is_an_error_not_a_silent_retrain(tmp_path, monkeypatch, empty_cache):
    name = "digits_cnn"
    spec = ZOO.create(name)
    src = artifacts.SHIPPED_DIR / f"{artifact_name(name, spec)}.pt"
    shutil.copy(src, tmp_path / src.name)
    with open(tmp_path / src.name, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)
    monkeypatch.setattr(artifacts, "SHIPPED_DIR", tmp_path)
    with pytest.raises(artifacts.ArtifactError, match="sha256"):
        load_zoo(name)
    (tmp_path / src.name).unlink()
    with pytest.raises(artifacts.ArtifactError, match="missing"):
        load_zoo(name)


def test_zoo_table_numbers_rerun_exactly(tmp_path):
    """reports/baselines/zoo_digits.csv (docs/results/zoo.md) is what reports/grids/zoo_digits.toml gives from
    the shipped weights, byte for byte; the grid holds every shipped digits entry, and every shipped MNIST entry is
    in the grid of its table."""
    from harness.cli import main
    from harness.grid import load_grid

    grid = ROOT / "reports" / "grids" / "zoo_digits.toml"
    assert {c.labels["model"] for c in load_grid(grid).cells} == {n for n in SHIPPED if n.startswith("digits")}
    mnist = {c.labels["model"] for g in ("zoo_mnist", "a5_mnist")  # the MNIST tables: docs/results/zoo.md, a5.md
             for c in load_grid(ROOT / "reports" / "grids" / f"{g}.toml").cells}
    assert {n for n in SHIPPED if n.startswith("mnist")} == mnist  # every shipped MNIST model has its table, and back
    assert main(["grid", str(grid), "--out", str(tmp_path / "zoo"), "--quiet"]) == 0
    baseline = ROOT / "reports" / "baselines" / "zoo_digits.csv"
    assert (tmp_path / "zoo" / "results.csv").read_text() == baseline.read_text()


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_default_job_passes_the_gate_under_another_cpu_dispatch(capability, tmp_path):
    """A fresh machine with another CPU: empty cache, another kernel dispatch; the CI gate must pass."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "HARNESS_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    run = [sys.executable, "-m", "harness", "run", "--defense", "none", "--attack", "fgsm", "--attack", "pgd_linf",
           "--out", str(out), "--quiet"]
    subprocess.run(run, env=env, cwd=ROOT, check=True)
    baseline = ROOT / "reports" / "baselines" / "digits_default.csv"
    check = subprocess.run([sys.executable, "-m", "harness", "check", "--baseline", str(baseline),
                            str(out / "results.csv"), "--tolerance", "1.0"], env=env, cwd=ROOT, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
