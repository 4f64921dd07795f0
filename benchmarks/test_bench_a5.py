"""A5/O (eq. 6) against its floor, in process CPU time, one thread.

    pytest benchmarks/test_bench_a5.py -s --benchmark-only

Floor: the ``steps`` bound passes A5/O cannot avoid: the IBP margin lower bound of the perturbed batch and its
gradient in the input, once per RMSprop step, on the same classifier and batch in the same run (rounds interleaved,
the fastest kept).  The peer for the bound pass itself is ``bound_propagation`` (benchmarks/test_bench_bounds.py);
no library implements A5.
"""
from __future__ import annotations

import time

import torch

from defenses.a5.preemptive import A5Offline
from harness import bounds as hb
from harness.core.artifacts import torch_threads
from harness.core.registry import MODELS
from harness.data import load
from harness.plugins import load_builtins

STEPS, N, ROUNDS, EPS = 20, 128, 3, 0.1


def floor(model, x, y):
    z = torch.zeros_like(x, requires_grad=True)
    for _ in range(STEPS):
        lb = hb.margin_bounds(model, (x + 0.3 * (2 * torch.sigmoid(z) - 1)).clamp(0, 1), y, EPS, method="ibp")
        (g,) = torch.autograd.grad(lb.sum(), z)
        z = (z - 0.1 * g).detach().requires_grad_(True)


def test_a5_offline_vs_floor(benchmark):
    load_builtins()
    torch.manual_seed(0)
    model = MODELS.create("a5_cnn_small", image_size=8).eval()  # random weights: timing only
    for p in model.parameters():
        p.requires_grad_(False)
    data = load("digits", "test")
    x, y = data.x[:N], data.y[:N]
    defense = A5Offline(eps=EPS, delta=0.3, bound="ibp", steps=STEPS)
    times = {"ours": [], "floor": []}
    with torch_threads(1):
        for _ in range(ROUNDS):
            for name, fn in (("floor", lambda: floor(model, x, y)), ("ours", lambda: defense.robustify(model, x, y))):
                t0 = time.process_time()
                fn()
                times[name].append(time.process_time() - t0)
        benchmark.pedantic(defense.robustify, args=(model, x, y), rounds=1, iterations=1)
    ours, base = min(times["ours"]), min(times["floor"])
    print(f"\nA5/O, {STEPS} steps, IBP, {N} images: {ours * 1e3 / N:.2f} CPU-ms/image, floor {base * 1e3 / N:.2f}, "
          f"ratio {ours / base:.2f}")
    benchmark.extra_info.update(ratio_to_floor=ours / base)
    assert ours / base < 3.0  # catches gross regressions only
