"""Cost of harness.bounds' IBP, CROWN-IBP and CROWN against their floor and against ``bound_propagation``.

    pytest benchmarks/test_bench_bounds.py -s --benchmark-only

Floor: one forward pass of the same model on the same batch (IBP costs about two: the centre and the
radius).  Cases: an MNIST-sized MLP (784-512-512-10, 64 random images; logit bounds, since that is what
``bound_propagation`` 0.4.7 returns; ours and its bounds on the same model with the same ReLU slopes: ours'
CROWN with ``intersect_ibp`` like its crown), and the digits SmallCNN (width 32, 8x8, 64 images; margin
lower bounds, IBP and CROWN-IBP only: full CROWN on a conv net costs one backward pass per neuron).
Everything under ``torch.no_grad()`` on one thread; rounds interleave the candidates and the fastest
round of each is kept; ratios use process CPU time (far steadier than wall-clock on a shared machine).
Ratios go to stdout and ``extra_info``; the assertion only catches gross (about 10x) regressions.

Floating-point-sound margins (``sound=True``, ``harness.bounds.sound``: a float64 copy of the model, the enclosures
widened by their rounding error, the float64 bound with its error account) on the SmallCNN case, one thread on the
shared 2-core Xeon: ibp_sound/ibp 9.3, crown-ibp_sound/crown-ibp 5.8 (64 vs 6.9 ms and 293 vs 51 ms per 64
images): the price of certificates that hold under rounding, which the certifiers pay by default
(``sound=false`` opts out).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import bound_propagation as bp
import pytest
import torch
from torch import nn

from harness import bounds as hb
from harness.models.small import SmallCNN

IBP_LIMIT, PEER_LIMIT = 12.0, 4.0


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def mlp_case() -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    x = torch.rand(64, 784)
    lower, upper = (x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1)
    peer = bp.BoundModelFactory(adaptive_relu=True).build(model)
    region = bp.HyperRectangle(lower, upper)
    return {
        "forward": lambda: model(x),
        "ibp": lambda: hb.bounds(model, lower, upper, method="ibp"),
        "crown-ibp": lambda: hb.bounds(model, lower, upper, method="crown-ibp"),
        "crown": lambda: hb.bounds(model, lower, upper, method="crown", intersect_ibp=True),
        "bp_ibp": lambda: peer.ibp(region),
        "bp_crown-ibp": lambda: peer.crown_ibp(region).concretize(),
        "bp_crown": lambda: peer.crown(region).concretize(),
    }


def cnn_case() -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, in_channels=1, image_size=8, width=32).eval()
    x = torch.rand(64, 1, 8, 8)
    y = model(x).argmax(1)
    return {
        "forward": lambda: model(x),
        "ibp": lambda: hb.margin_bounds(model, x, y, 0.1, method="ibp"),
        "crown-ibp": lambda: hb.margin_bounds(model, x, y, 0.1, method="crown-ibp"),
        "ibp_sound": lambda: hb.margin_bounds(model, x, y, 0.1, method="ibp", sound=True),
        "crown-ibp_sound": lambda: hb.margin_bounds(model, x, y, 0.1, method="crown-ibp", sound=True),
    }


RATIOS = {
    "mlp": [("ibp", "forward"), ("crown-ibp", "forward"), ("crown", "forward"), ("ibp", "bp_ibp"),
            ("crown-ibp", "bp_crown-ibp"), ("crown", "bp_crown")],
    "small_cnn": [("ibp", "forward"), ("crown-ibp", "forward"), ("ibp_sound", "ibp"), ("crown-ibp_sound", "crown-ibp")],
}


@pytest.mark.parametrize("case", ["mlp", "small_cnn"])
def test_bounds_vs_floor_and_peer(benchmark, case):
    candidates = mlp_case() if case == "mlp" else cnn_case()
    repeats = {name: 1 if "crown" in name and "ibp" not in name else 10 for name in candidates}
    times: dict[str, list[float]] = {name: [] for name in candidates}

    def timed(name: str) -> None:
        t0 = time.process_time()
        for _ in range(repeats[name]):
            candidates[name]()
        times[name].append((time.process_time() - t0) / repeats[name])

    def others() -> None:
        for name in candidates:
            if name != "ibp":
                timed(name)

    with one_thread(), torch.no_grad():
        for name in candidates:  # warm-up
            candidates[name]()
        benchmark.pedantic(lambda: timed("ibp"), setup=others, rounds=5, iterations=1)
    best = {name: min(v) for name, v in times.items()}
    ratios = {f"{a}/{b}": best[a] / best[b] for a, b in RATIOS[case]}
    benchmark.extra_info.update({f"ms.{k}": round(1e3 * v, 3) for k, v in best.items()})
    benchmark.extra_info.update({k: round(v, 3) for k, v in ratios.items()})
    print(f"\nbounds on {case} (one thread), CPU ms per call: " + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in best.items()))
    print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + "  (IBP floor ~2 forward passes)")
    assert ratios["ibp/forward"] <= IBP_LIMIT
    for a, b in RATIOS[case]:
        if b.startswith("bp_"):
            assert ratios[f"{a}/{b}"] <= PEER_LIMIT
