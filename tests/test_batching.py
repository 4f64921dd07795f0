"""``run --batch-size auto`` (harness/batching.py): the probe halves on out-of-memory and the run uses its size."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from harness import batching
from harness.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

JOB = ["run", "--defense", "none", "--attack", "fgsm", "--attack", "pgd_linf", "--n", "120", "--quiet"]


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_and_recognise_out_of_memory():
    assert batching.parse_batch_size("auto") == "auto" and batching.parse_batch_size("64") == 64
    assert batching.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert batching.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not batching.is_oom(RuntimeError("shape mismatch")) and not batching.is_oom(ValueError("out of memory"))


@pytest.fixture
def device_with_room_for(monkeypatch):
    """``device_with_room_for(k)``: the probe runs as on CUDA and its forward/backward raises OOM above k images."""
    probed = []

    def install(k):
        monkeypatch.setattr(batching, "start_size", lambda n, device: min(n, batching.CUDA_CAP))

        def forward_backward(model, x, y):
            probed.append(len(x))
            if len(x) > k:
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate for {len(x)} images")
        monkeypatch.setattr(batching, "forward_backward", forward_backward)
        return probed
    return install


def test_auto_halves_on_out_of_memory_and_finishes_with_the_right_rows(tmp_path, device_with_room_for, adv_model):
    probed = device_with_room_for(50)
    assert main([*JOB, "--batch-size", "auto", "--out", str(tmp_path / "auto")]) == 0
    assert probed == [120, 60, 30]
    info = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert info["config"]["batch_size"] == 30
    assert info["batching"]["chosen"] == 30 and info["batching"]["probed"] == [120, 60, 30]
    # the run is the --batch-size 30 run: same config hash, same bytes
    assert main([*JOB, "--batch-size", "30", "--out", str(tmp_path / "b30")]) == 0
    assert (tmp_path / "auto" / "results.csv").read_bytes() == (tmp_path / "b30" / "results.csv").read_bytes()
    assert [r["attack"] for r in rows(tmp_path / "auto" / "results.csv")] == ["fgsm", "pgd_linf", "worst-case"]


def test_probe_leaves_the_model_as_it_was_and_reraises_other_errors(adv_model, digits_test, monkeypatch):
    monkeypatch.setattr(batching, "start_size", lambda n, device: n)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    size, _ = batching.probe_batch_size(model, digits_test.x[:40], digits_test.y[:40], torch.device("cpu"))
    assert size == 40 and model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # eval: no running-stat update
    monkeypatch.setattr(batching, "forward_backward", lambda m, x, y: (_ for _ in ()).throw(RuntimeError("shape")))
    with pytest.raises(RuntimeError, match="shape"):
        batching.probe_batch_size(model, digits_test.x[:40], digits_test.y[:40], torch.device("cpu"))


def test_nothing_fits_is_a_usage_error(tmp_path, capsys, device_with_room_for, adv_model):
    device_with_room_for(0)
    assert main([*JOB, "--batch-size", "auto", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not even one image" in err and not (tmp_path / "o").exists()


def test_auto_on_the_cpu_is_the_default_batch_without_a_probe(tmp_path, monkeypatch, adv_model):
    monkeypatch.setattr(batching, "forward_backward", lambda *a: pytest.fail("no probe on the CPU"))
    assert main([*JOB, "--batch-size", "auto", "--device", "cpu", "--out", str(tmp_path / "auto")]) == 0
    assert main([*JOB, "--device", "cpu", "--out", str(tmp_path / "default")]) == 0
    assert (tmp_path / "auto" / "results.csv").read_bytes() == (tmp_path / "default" / "results.csv").read_bytes()
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["batching"]["chosen"] == batching.DEFAULT


@pytest.mark.parametrize("args", [["run", "--batch-size", "many"], ["run", "--batch-size", "0"],
                                  ["train", "--batch-size", "auto", "--out", "m.pt"]])
def test_bad_batch_size_is_one_line_exit_2(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch" in err
    assert not list(tmp_path.iterdir())
