"""A5/O (eq. 6) and A5/P (eqs. 10-11) against their floors, in process CPU time, one thread.

    pytest benchmarks/test_bench_a5.py -s --benchmark-only

Floor: the ``steps`` bound passes A5/O cannot avoid: the IBP margin lower bound of the perturbed batch and its
gradient in the input, once per RMSprop step, on the same classifier and batch in the same run (rounds interleaved,
the fastest kept).  The peer for the bound pass itself is ``bound_propagation`` (benchmarks/test_bench_bounds.py);
no library implements A5.  A5/P's floor per step: the acquisitions A(w + dw_D) of every prototype, their IBP margin
lower bound and its gradient in z (what remains is the clean-error forward for the log and RMSprop).
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


def physical_floor(C, w, eps, delta, acquisition, steps, n):
    """What A5/P cannot avoid per RMSprop step (eqs. 10-11): the acquisitions A(w + dw_D(z)) of every prototype,
    the IBP margin lower bound of them and its gradient in z."""
    from defenses.a5.objective import margin_lower, worst_case_ce
    from defenses.a5.physical import robust_prototypes

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(len(w)).repeat(n)
    z = torch.zeros_like(w, requires_grad=True)
    for _ in range(steps):
        x = acquisition(robust_prototypes(w, z, delta).repeat(n, 1, 1, 1), gen)
        (g,) = torch.autograd.grad(worst_case_ce(margin_lower(C, x, y, eps, "ibp", 0.0)), z)
        z = (z - 0.01 * g).detach().requires_grad_(True)


def test_a5_physical_vs_floor(benchmark):
    """A5/P (``train_physical``, C frozen) against its floor: same classifier, prototypes, acquisitions, steps."""
    from defenses.a5.physical import Acquisition, alphabet, fonts_cnn, train_physical

    torch.manual_seed(0)
    C = fonts_cnn().eval()  # random weights: timing only
    w, acq = alphabet(), Acquisition()
    steps, n, delta = 5, 4, 0.5
    times = {"ours": [], "floor": []}
    run = {"floor": lambda: physical_floor(C, w, EPS, delta, acq, steps, n),
           "ours": lambda: train_physical(C, w, EPS, delta, steps=steps, n=n, acquisition=acq)}
    with torch_threads(1):
        for _ in range(ROUNDS):
            for name, fn in run.items():
                t0 = time.process_time()
                fn()
                times[name].append(time.process_time() - t0)
        benchmark.pedantic(run["ours"], rounds=1, iterations=1)
    ours, base = min(times["ours"]), min(times["floor"])
    print(f"\nA5/P, {steps} steps, {len(w)} prototypes x {n} acquisitions, IBP: {ours * 1e3 / steps:.1f} CPU-ms/step, "
          f"floor {base * 1e3 / steps:.1f}, ratio {ours / base:.2f}")
    benchmark.extra_info.update(ratio_to_floor=ours / base)
    assert ours / base < 3.0  # catches gross regressions only
