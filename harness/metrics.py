"""Accuracies with exact 95% confidence intervals, and perturbation-norm summaries."""
from __future__ import annotations

import math

import torch


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval (Clopper & Pearson 1934) for k successes in n trials: the
    alpha/2 quantile of Beta(k, n - k + 1) and the 1 - alpha/2 quantile of Beta(k + 1, n - k)."""
    if n == 0:
        return (math.nan, math.nan)
    a = 1 - level
    lo = 0.0 if k == 0 else beta_quantile(a / 2, k, n - k + 1)
    hi = 1.0 if k == n else beta_quantile(1 - a / 2, k + 1, n - k)
    return lo, hi


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b): the x with I_x(a, b) = q, by bisection to a bracket of 1e-3 and then Newton
    steps kept inside the bracket (I_x is increasing; its derivative is the Beta density).  Agrees with
    ``scipy.stats.beta.ppf`` to 1e-12 (tests/test_core.py), without importing scipy.stats (0.4 CPU-s at start-up)."""
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if regularized_beta(a, b, mid) < q else (lo, mid)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    x = (lo + hi) / 2
    for _ in range(100):
        f = regularized_beta(a, b, x) - q
        lo, hi = (x, hi) if f < 0 else (lo, x)
        density = math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))
        step = f / density if density > 0 else math.inf
        new = x - step if lo < x - step < hi else (lo + hi) / 2  # a Newton step that leaves the bracket bisects
        if abs(new - x) <= 4e-16 * x or new in (lo, hi):
            return new
        x = new
    return x


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, by its continued fraction (modified Lentz), on the side
    of x where the fraction converges fast (I_x(a, b) = 1 - I_{1-x}(b, a))."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes, 3rd ed., section 6.4), to double precision."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1_000_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"the continued fraction of I_x({a}, {b}) at x={x} did not converge")


def accuracy(mask: torch.Tensor) -> dict:
    """Accuracy in percent with its 95% Clopper-Pearson interval, from a per-sample boolean mask."""
    k, n = int(mask.sum()), int(mask.numel())
    lo, hi = clopper_pearson(k, n)
    return {"acc": 100.0 * k / n if n else math.nan, "ci_low": 100.0 * lo, "ci_high": 100.0 * hi, "k": k, "n": n}


def norm_summary(dist: torch.Tensor, attacked: torch.Tensor) -> tuple[float, float]:
    """Mean and max distance of the adversarial images to their reference, over the attacked samples."""
    d = dist[attacked]
    if d.numel() == 0:
        return (math.nan, math.nan)
    return float(d.mean()), float(d.max())
