"""Is one accuracy significantly below another?  The two tests of the regression gate and the masking flags.

- Paired (both accuracies counted on the same samples, per-sample verdicts known): the exact McNemar test
  (McNemar 1947) on the discordant samples.  ``lost`` samples were robust before and are not now, ``gained`` the
  reverse; under "no change" each discordant sample is a fair coin, so the one-sided p-value of a drop is
  P(Binomial(lost + gained, 1/2) >= lost).
- Unpaired (only the counts k/n of each side): the two exact Clopper-Pearson intervals, at the level at which
  their separation is a one-sided test at ``alpha`` (Goldstein & Healy 1995: two intervals of half-width
  z* s that do not overlap mean a difference above 2 z* s = sqrt(2) z_(1-alpha) s_diff for equal errors, so
  z* = z_(1-alpha) / sqrt(2); for alpha = 0.05 that is the 75.5% interval).  The drop is significant when the
  higher side's interval lies wholly above the lower side's.
"""
from __future__ import annotations

import math

from scipy.stats import binom, norm

from .metrics import clopper_pearson

ALPHA = 0.05


def mcnemar_p(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value of a drop: P(X >= lost), X ~ Binomial(lost + gained, 1/2)."""
    if lost + gained == 0:
        return 1.0
    return float(binom.sf(lost - 1, lost + gained, 0.5))


def separation_level(alpha: float = ALPHA) -> float:
    """The two-sided level of the Clopper-Pearson intervals whose separation is a one-sided test at ``alpha``."""
    z = norm.ppf(1 - alpha) / math.sqrt(2)
    return float(2 * norm.cdf(z) - 1)


def intervals(k_before: int, n_before: int, k_now: int, n_now: int, alpha: float = ALPHA):
    """((low, high) before, (low, high) now), in percent, at ``separation_level(alpha)``."""
    level = separation_level(alpha)
    before = clopper_pearson(k_before, n_before, level)
    now = clopper_pearson(k_now, n_now, level)
    return (100 * before[0], 100 * before[1]), (100 * now[0], 100 * now[1])


def fell_unpaired(k_before: int, n_before: int, k_now: int, n_now: int, alpha: float = ALPHA) -> bool:
    """The Clopper-Pearson test: the interval of ``now`` lies wholly below the interval of ``before``."""
    before, now = intervals(k_before, n_before, k_now, n_now, alpha)
    return now[1] < before[0]


def count(acc: float, n: int) -> int:
    """The number of samples behind an accuracy in percent written with two decimals."""
    return int(round(acc * n / 100))
