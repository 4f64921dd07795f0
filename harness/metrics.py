"""Accuracies with exact 95% confidence intervals, and perturbation-norm summaries."""
from __future__ import annotations

import math

import torch
from scipy.stats import beta


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval (Clopper & Pearson 1934) for k successes in n trials."""
    if n == 0:
        return (math.nan, math.nan)
    a = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


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
