"""The headline example of docs/results, ``harness run --defense preempt --attack adaptive_l2``, against its floor.

    pytest benchmarks/test_bench_example.py -s --benchmark-only        # first 60 digits test images
    BENCH_EXAMPLE_N=360 pytest benchmarks/test_bench_example.py -s --benchmark-only   # the whole example

Floor: the forward+backward passes the example cannot avoid, timed on the same model and batch in the same run:
Algorithm 1 (MAXITER x (T+1) gradient passes) and Algorithm 3 (the attacker's reconstruction, the same count), on
inputs perturbed once by U(B_eps) (the CPU kernels run faster on the clean images' exact zeros).  The PGD and
AutoAttack sweep of Algorithm 4 comes on top: the ratio says how much of the time it takes.  Process CPU time,
one thread; the run's numbers are printed too (they must not change when the code is made faster).
"""
from __future__ import annotations

import csv
import os
import time

import torch

from harness.cli import main as harness
from harness.core.artifacts import torch_threads
from harness.core.geometry import random_in_ball
from harness.data import load
from harness.models.zoo import load_zoo

N = int(os.environ.get("BENCH_EXAMPLE_N", "60"))
MAXITER, T = 100, 20


def floor_seconds(n: int) -> float:
    model = load_zoo("digits_cnn_adv").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = load("digits", "test").x[:n]
    torch.manual_seed(0)
    x = (x + random_in_ball(x, "l2", 0.5)).clamp(0, 1).requires_grad_(True)
    t0 = time.process_time()
    for _ in range(2 * MAXITER * (T + 1)):
        torch.autograd.grad(model(x).sum(), x)
    return time.process_time() - t0


def test_example_vs_floor(benchmark, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--defense", "preempt", "--attack", "adaptive_l2", "--n", str(N), "--out", str(out), "--quiet"]
    with torch_threads(1):
        t0 = time.process_time()
        benchmark.pedantic(harness, args=(argv,), rounds=1, iterations=1)
        example = time.process_time() - t0
        floor = floor_seconds(N)
    row = next(r for r in csv.DictReader(open(out / "results.csv")) if r["attack"] == "adaptive_l2")
    stages = {r["stage"]: float(r["seconds"]) for r in csv.DictReader(open(out / "timings.csv"))}
    ratio = example / floor
    print(f"\nexample on {N} images: {example:.1f} CPU-s, floor (Alg. 1 + Alg. 3 passes) {floor:.1f} CPU-s, "
          f"ratio {ratio:.2f}; stages (wall s): {stages}")
    print(f"numbers: clean {row['clean_acc']}, robust {row['robust_acc']}, invalid {row['invalid']}")
    benchmark.extra_info.update(example_cpu_s=example, floor_cpu_s=floor, ratio=ratio, robust_acc=row["robust_acc"])
    assert ratio > 1.0  # the example does the floor's passes and more; no bound on the AutoAttack part
