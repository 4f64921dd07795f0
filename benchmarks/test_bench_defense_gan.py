"""Defense-GAN's projection P(x) = G(z*(x)) against its floor, in process CPU time, one thread.

    pytest benchmarks/test_bench_defense_gan.py -s --benchmark-only

Floor: the L x R forward+backward passes of G that the L gradient steps from R starts cannot avoid (gradient in z of
||G(z) - x||^2 over the R x N latent batch), plus one forward, timed on the same generator and batch in the same
run, the rounds interleaved and the fastest kept.  No peer: no installable library implements Defense-GAN.
"""
from __future__ import annotations

import time

import torch

import defenses.defense_gan as dg
from harness.core.artifacts import torch_threads
from harness.data import load
from harness.plugins import load_builtins

L, R, N, ROUNDS = 50, 5, 128, 3


def floor(g, x):
    z = torch.randn(R * N, g.latent_dim).requires_grad_(True)
    target = x.repeat(R, 1, 1, 1)
    for _ in range(L):
        (gz,) = torch.autograd.grad(((g(z) - target) ** 2).sum(), z)
        z = (z - 0.1 * gz).detach().requires_grad_(True)
    with torch.no_grad():
        g(z)


def test_projection_vs_floor(benchmark):
    load_builtins()
    defense = dg.DefenseGAN(L=L, R=R)
    x = load("digits", "test").x[:N]
    times = {"ours": [], "floor": []}
    with torch_threads(1):
        for _ in range(ROUNDS):
            for name, fn in (("floor", lambda: floor(defense.G, x)), ("ours", lambda: defense.purify(x))):
                t0 = time.process_time()
                fn()
                times[name].append(time.process_time() - t0)
        benchmark.pedantic(defense.purify, args=(x,), rounds=1, iterations=1)
    ours, base = min(times["ours"]), min(times["floor"])
    print(f"\nDefense-GAN P(x), L={L}, R={R}, {N} images: {ours * 1e3 / N:.2f} CPU-ms/image, floor "
          f"{base * 1e3 / N:.2f}, ratio {ours / base:.2f}")
    benchmark.extra_info.update(ratio_to_floor=ours / base)
    assert ours / base < 3.0  # catches gross regressions only
