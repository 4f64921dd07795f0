"""Out-of-distribution detection metrics: AUROC, AUPR, FPR at 95% TPR, and the 95%-TPR threshold.

Scores follow the harness's Detector contract: HIGHER = more in-distribution.

Convention (the harness's default, ``positive="in"``): the in-distribution is the POSITIVE class.
  * AUROC: P(s_in > s_out) + P(s_in = s_out)/2 (symmetric: the same with OOD positive on -score).
  * AUPR (AUPR-In): average precision with in-distribution positive and score s (sklearn's step-wise
    ``average_precision_score``: sum over thresholds of (R_k - R_{k-1}) P_k).
  * FPR95: the fraction of OOD samples ACCEPTED (s_out >= tau) at the largest threshold tau that accepts at least
    95% of the in-distribution (TPR >= 0.95): tau = the ceil(0.95 n_in)-th largest in-distribution score.  This is
    the smallest FPR on the ROC curve with TPR >= 0.95 (sklearn's roc_curve points; ties at tau accepted).
The safe-spot paper says "the false positive rate at 95% true positive rate (FPR95)" and "following the
experimental protocol of Hendrycks et al. (2019b)" (section 4.4) without naming the positive class.  Outlier
Exposure's code (docs/REFERENCE-IMPLEMENTATIONS.md section 2) takes the OUT-distribution as positive: AUPR-Out =
average precision of -s with OOD positive, and FPR95 = the fraction of IN-distribution samples flagged at the
threshold where 95% of the OOD samples are flagged.  ``positive="out"`` computes that convention (OE's
``fpr_and_fdr_at_recall`` picks the threshold with recall closest to 0.95; here, as above, the largest flagging
threshold with recall >= 0.95).  ``ood_metrics`` returns both so that a table can name its convention.

All functions take 1-d arrays or tensors; results are fractions in [0, 1] (``ood_metrics`` returns percent).
"""
from __future__ import annotations

import math

import numpy as np

TPR = 0.95


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64).ravel()
    if not np.isfinite(a).all():
        raise ValueError("OOD scores must be finite")
    return a


def auroc(s_pos, s_neg) -> float:
    """P(s_pos > s_neg) + 0.5 P(s_pos = s_neg) (Mann-Whitney U / (n_pos n_neg)), by mid-ranks."""
    p, n = _np(s_pos), _np(s_neg)
    if len(p) == 0 or len(n) == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([p, n]))  # average ranks for ties
    u = ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2
    return float(u / (len(p) * len(n)))


def average_precision(s_pos, s_neg) -> float:
    """Area under the precision-recall curve of the positives, as the step sum over distinct thresholds
    sum_k (R_k - R_{k-1}) P_k (sklearn's ``average_precision_score``; ties form one threshold)."""
    p, n = _np(s_pos), _np(s_neg)
    if len(p) == 0:
        return math.nan
    scores = np.concatenate([p, n])
    labels = np.concatenate([np.ones(len(p)), np.zeros(len(n))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # the last index of each tie group
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / len(p)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def threshold_at_tpr(s_pos, tpr: float = TPR) -> float:
    """The largest tau with mean(s_pos >= tau) >= tpr: the ceil(tpr * n)-th largest positive score.

    (ceil is taken with a 1e-9 slack so that 0.95 * 20 = 19.000000000000004 counts as 19.)"""
    p = np.sort(_np(s_pos))[::-1]
    if len(p) == 0:
        raise ValueError("no positive scores to set a threshold on")
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, math.ceil(tpr * len(p) - 1e-9))
    return float(p[k - 1])


def fpr_at_tpr(s_pos, s_neg, tpr: float = TPR) -> float:
    """Fraction of negatives with s_neg >= tau at tau = ``threshold_at_tpr(s_pos, tpr)``."""
    n = _np(s_neg)
    if len(n) == 0:
        return math.nan
    return float(np.mean(n >= threshold_at_tpr(s_pos, tpr)))


def ood_metrics(score_in, score_out, tpr: float = TPR) -> dict:
    """Percentages for one (in-distribution, OOD set) pair; scores higher = in-distribution.

    ``auroc``; ``aupr`` and ``fpr95``: in-distribution positive (the harness's headline convention, module
    docstring); ``aupr_out`` and ``fpr95_out``: OOD positive on -score (Outlier Exposure's code convention).
    """
    s_in, s_out = _np(score_in), _np(score_out)
    return {"auroc": 100 * auroc(s_in, s_out),
            "aupr": 100 * average_precision(s_in, s_out),
            "fpr95": 100 * fpr_at_tpr(s_in, s_out, tpr),
            "aupr_out": 100 * average_precision(-s_out, -s_in),
            "fpr95_out": 100 * fpr_at_tpr(-s_out, -s_in, tpr)}


def mean_std(runs: list[dict]) -> dict:
    """Per key, (mean, sample standard deviation) over runs (seeds); std is nan for a single run."""
    keys = runs[0].keys() if runs else []
    out = {}
    for k in keys:
        v = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan)
    return out
