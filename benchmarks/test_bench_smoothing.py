"""CERTIFY throughput against its floor: plain batched forward passes of the base model on as many noisy inputs.

    pytest benchmarks/test_bench_smoothing.py -s

The floor runs the base classifier on pre-generated noisy inputs in the same batches CERTIFY uses (n0 + n
draws per image, ``batch`` per forward pass), with nothing else.  CERTIFY adds the noise draws, the
gather of the images, argmax, the counting and the Clopper-Pearson bound.  The floor's inputs are already
perturbed, x + N(0, sigma^2) as CERTIFY draws them (no clean-input floor: CERTIFY never classifies a clean
image), so the ratio compares the same kernels on the same kind of values.

Timing: process CPU time (``time.process_time``) on one thread, as ``test_bench_pgd.py`` (on a shared machine
wall-clock rounds of the same work vary by 2x with the other processes' load, CPU time far less).  Rounds of
the floor (in pytest-benchmark's untimed setup) and of CERTIFY alternate, the fastest round of each is kept,
and the ratio certify / noisy-input floor is printed and stored in extra_info.  Target: ratio <= 1.1; the
assertion only catches gross regressions.
"""
from __future__ import annotations

import time

import torch

from defenses.smoothing import Smoothing
from harness.data import load
from harness.models.small import SmallCNN
from harness.models.zoo import torch_threads

TARGET, LIMIT = 1.1, 1.3


def test_certify_samples_per_second_vs_forward_floor(benchmark):
    torch.manual_seed(0)
    model = SmallCNN(image_size=8).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = load("digits", "test").x[:4]
    n0, n, batch, sigma = 100, 2_000, 1_000, 0.25
    smooth = Smoothing(sigma=sigma, n0=n0, n_certify=n, batch=batch)
    samples = len(x) * (n0 + n)

    chunks = []
    for num in (n0, n):
        total = len(x) * num
        for start in range(0, total, batch):
            rows = torch.arange(start, min(start + batch, total)) // num
            chunks.append(x[rows] + sigma * torch.randn(len(rows), *x.shape[1:]))
    floor_times: list[float] = []
    certify_times: list[float] = []

    def floor() -> None:
        t0 = time.process_time()
        with torch.inference_mode():
            for c in chunks:
                model(c)
        floor_times.append(time.process_time() - t0)

    def certify() -> None:
        t0 = time.process_time()
        smooth.certify(model, x)
        certify_times.append(time.process_time() - t0)

    with torch_threads(1):  # one core: far less sensitive to other processes on a shared machine
        floor()  # warm-up
        certify()
        benchmark.pedantic(certify, setup=floor, rounds=15, iterations=1)
    t_cert, t_floor = min(certify_times), min(floor_times)
    ratio = t_cert / t_floor
    benchmark.extra_info.update({"samples": samples, "certify_samples_per_s": samples / t_cert,
                                 "floor_samples_per_s": samples / t_floor, "ratio": ratio, "target": TARGET})
    print(f"\nCERTIFY {samples / t_cert:,.0f} noisy samples per CPU-s; floor (forward only, on x + N(0, sigma^2)) "
          f"{samples / t_floor:,.0f}/s; ratio certify / noisy-input floor {ratio:.3f} (target <= {TARGET})")
    assert ratio <= LIMIT, f"CERTIFY costs {ratio:.2f} x the forward floor (target {TARGET})"
