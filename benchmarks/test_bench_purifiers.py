"""Throughput of attacks on a purified model against the floor, measured in the same run.

Floor: T steps of one forward + backward pass through P and the target (the gradient a white-box attack
needs, nothing else).  Measured: white-box PGD-T through P (early stopping off, so the work is the same:
its overhead is the initial and final forward passes, projection and bookkeeping), and BPDA-PGD-T (P's
forward without a graph, backward through the target only: it may beat the floor).  The ratio
attack / floor is printed and stored in ``extra_info``; minima of several rounds are used (robust on a
shared machine).

    .venv/bin/python -m pytest benchmarks/test_bench_purifiers.py -q -s
"""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("pytest_benchmark")

from attacks.bpda import BPDA  # noqa: E402
from attacks.pgd import PGD  # noqa: E402
from defenses.purifiers.training import PurifierDefense, build_net  # noqa: E402
from harness.data import load  # noqa: E402
from harness.models.zoo import torch_threads, load_zoo  # noqa: E402

STEPS, N, ROUNDS = 10, 128, 7


@pytest.fixture(scope="module")
def setup():
    with torch_threads(1):  # tiny networks; one thread is the stable measurement on a shared machine
        yield _setup()


def _setup():
    target = load_zoo("digits_cnn_adv", quiet=True)
    for p in target.parameters():
        p.requires_grad_(False)
    net = build_net("jatp", 1, {}).eval()  # the default-sized RRDB purifier; speed does not depend on training
    for p in net.parameters():
        p.requires_grad_(False)
    defense = PurifierDefense("jatp", net, {})
    x = load("digits", "test").x[:N]
    with torch.no_grad():  # labels = the defended model's predictions: every sample is attacked for every step
        y = target(defense.purify(x)).argmax(1)
    return target, defense, x, y


def _floor(full, x, y):
    for _ in range(STEPS):
        xa = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(full(xa), y, reduction="sum"), xa)
    return g


def _best(fn, *args) -> float:
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.mark.parametrize("attack", ["white-box-pgd", "bpda-pgd"])
def test_purified_attack_vs_floor(benchmark, setup, attack):
    target, defense, x, y = setup
    full = defense.surface(target, "white-box")
    if attack == "white-box-pgd":
        atk = PGD(norm="linf", eps=0.1, steps=STEPS, early_stop=False)
        run = lambda: atk.perturb(full, x, y)  # noqa: E731
    else:
        atk = BPDA(norm="linf", eps=0.1, steps=STEPS)
        atk._inner.early_stop = False
        run = lambda: atk.perturb(full, x, y, defense=defense, classifier=target)  # noqa: E731
    _floor(full, x, y)  # warm up
    floor = _best(_floor, full, x, y)
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    floor = min(floor, _best(_floor, full, x, y))  # floor measured before and after, best kept
    ratio = benchmark.stats.stats.min / floor
    benchmark.extra_info.update(floor_s=floor, ratio_vs_floor=ratio, images_per_s=N / benchmark.stats.stats.min)
    print(f"\n{attack}: {N / benchmark.stats.stats.min:.0f} images/s ({STEPS} steps), floor "
          f"{N / floor:.0f} images/s, ratio attack/floor = {ratio:.2f}")
    assert ratio < (1.6 if attack == "white-box-pgd" else 1.3)
