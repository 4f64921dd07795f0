"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): the smoothed classifier, PREDICT, CERTIFY.

The smoothed classifier of a base classifier f is g(x) = argmax_c P[f(x + eta) = c], eta ~ N(0, sigma^2 I).
Noise is added in [0, 1] pixel space and is NOT clamped (as in ``locuslab/smoothing``; normalisation is
inside the model).  ``Smoothing`` follows Cohen et al.'s ``Smooth`` class (docs/REFERENCE-IMPLEMENTATIONS.md
section 6):

- ``sample_noise``: class counts of f(x + N(0, sigma^2 I)) over ``num`` draws per image, batched across
  images (``batch`` noisy inputs per forward pass).
- ``predict``: Cohen et al. 2019, pseudocode PREDICT (two-sided binomial test on the top-2 counts).
- ``certify``: Cohen et al. 2019, pseudocode CERTIFY (n0 selection draws, n fresh estimation draws,
  one-sided Clopper-Pearson lower bound, radius sigma * Phi^-1(pA_lower)).
- ``surface``: what a gradient attack sees: white-box, the soft smoothed classifier
  G(x) = E_eta[softmax(f(x + eta))] (Salman et al. 2019; preemptive paper eq. 3) as log-probabilities;
  oblivious, the base classifier.

Randomness: every draw comes from torch's global generator, which the engine seeds per cell, so a run is
deterministic for its seed.  For one image, the draws are exactly those of Cohen et al.'s code
(``randn`` of shape (min(batch, remaining), C, H, W), selection before estimation).

Also here: ``preempt_smooth``, preemptive robustification of a smoothed classifier (preemptive paper,
section 3.6), and the ``gaussian`` training recipe (Gaussian data augmentation, Cohen et al. 2019).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import nn

from harness.core.capabilities import Certifies, Randomized
from harness.core.defense import ABSTAIN, SoftSmoothed, Wrapper
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES, RECIPES, Part

from .preempt import PreemptRobustify

# --------------------------------------------------------------------------------------------------------
# The soft smoothed classifier (Salman et al. 2019, the SmoothAdv objective; preemptive paper eq. 3)
# --------------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------

def lower_confidence_bound(n_a, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p from n_a successes in n trials.

    = Beta(alpha; n_a, n - n_a + 1) quantile, i.e. Cohen et al.'s
    ``proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]``; 0 when n_a = 0 (as statsmodels).
    """
    from scipy.stats import beta  # scipy.stats takes seconds to import: only where it is used

    n_a = np.asarray(n_a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(alpha, n_a, n - n_a + 1)
    return np.where(n_a > 0, lo, 0.0)


def normal_ppf(p: np.ndarray) -> np.ndarray:
    """Phi^{-1}(p), the standard normal quantile (the certified radius sigma * Phi^{-1}(p_A), Cohen et al. Thm. 1)."""
    from scipy.stats import norm

    return norm.ppf(p)


@lru_cache(maxsize=65536)
def binom_pvalue(c1: int, c2: int) -> float:
    """Two-sided binomial test p-value of c1 successes in c1 + c2 trials at p = 1/2 (Cohen's PREDICT)."""
    from scipy.stats import binomtest

    return float(binomtest(c1, c1 + c2, 0.5).pvalue)


# --------------------------------------------------------------------------------------------------------
# The defense
# --------------------------------------------------------------------------------------------------------

@DEFENSES.register("smoothing", "randomized smoothing (Cohen et al. 2019): PREDICT with abstain; CERTIFY an L2 radius")
class Smoothing(Wrapper, Certifies):
    """Cohen et al.'s smoothed classifier g with Gaussian noise of standard deviation ``sigma``.

    ``classify`` is PREDICT with ``n`` draws at level ``alpha`` (-1 = abstain; the paper uses n = 100,000,
    the default here is 100 to keep evaluation cheap: more abstentions, never a wrong guarantee).
    ``certify`` uses ``n0`` selection and ``n_certify`` estimation draws (paper: 100 and 100,000).
    ``batch``: noisy inputs per forward pass.  ``m``: noise draws of the soft smoothed classifier that
    white-box gradient attacks see (``surface``); attacks with their own scheme (``pgd_smooth``) override it.
    ``abstain=False``: ``classify`` is the plain majority vote over the n draws, without the binomial test, as the
    preemptive paper evaluates smoothed classifiers empirically (appendix C.2: "50 Gaussian samples ... majority
    vote"); CERTIFY is unchanged.
    """

    certifier = ""

    def __init__(self, sigma: float = 0.25, n: int = 100, n0: int = 100, n_certify: int = 100_000,
                 alpha: float = 0.001, batch: int = 1000, m: int = 8, abstain: bool = True):
        if not sigma > 0:
            raise UsageError(f"smoothing: sigma must be > 0, got {sigma}")
        if min(n, n0, n_certify, batch, m) < 1:
            raise UsageError("smoothing: n, n0, n_certify, batch and m must be >= 1")
        if not 0 < alpha < 1:
            raise UsageError(f"smoothing: alpha must lie in (0, 1), got {alpha}")
        self.sigma, self.n, self.n0, self.n_certify = float(sigma), int(n), int(n0), int(n_certify)
        self.alpha, self.batch, self.m, self.abstain = float(alpha), int(batch), int(m), bool(abstain)

    @torch.inference_mode()
    def sample_noise(self, model: nn.Module, x: torch.Tensor, num: int, batch: int | None = None) -> torch.Tensor:
        """Counts (B, classes) of f(x_i + N(0, sigma^2 I)) over ``num`` draws per image (Cohen's _sample_noise).

        The B * num (image, draw) pairs are taken image-major, ``batch`` rows per forward pass, so one pass
        may hold draws of several images; for B = 1 the draws are exactly Cohen et al.'s.  The noise is not
        clamped to [0, 1].
        """
        batch = int(batch or self.batch)
        total, b = x.shape[0] * num, x.shape[0]
        counts = None
        for start in range(0, total, batch):
            rows = torch.arange(start, min(start + batch, total), device=x.device) // num
            noisy = torch.randn((len(rows), *x.shape[1:]), device=x.device, dtype=x.dtype).mul_(self.sigma).add_(x[rows])
            logits = model(noisy)
            pred = logits.argmax(1)
            if counts is None:
                classes = logits.shape[1]
                counts = torch.zeros(b * classes, dtype=torch.long, device=x.device)
            counts += torch.bincount(rows * classes + pred, minlength=b * classes)
        return counts.view(b, classes)

    def predict(self, model: nn.Module, x: torch.Tensor, n: int | None = None, alpha: float | None = None,
                batch: int | None = None) -> torch.Tensor:
        """PREDICT (Cohen et al. 2019, pseudocode): the top class, or -1 (abstain) if the two-sided binomial
        test of its count c1 against the runner-up's c2 at p = 1/2 has p-value > alpha.

        With probability at least 1 - alpha the answer, if not -1, is g(x) (Cohen et al. 2019, Theorem 2).
        """
        n = self.n if n is None else int(n)
        alpha = self.alpha if alpha is None else float(alpha)
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=x.device)
        counts = self.sample_noise(model, x, n, batch).cpu()
        top = counts.topk(2, dim=1)
        c1, c2 = top.values[:, 0].tolist(), top.values[:, 1].tolist()
        abstain = torch.tensor([binom_pvalue(a, b) > alpha for a, b in zip(c1, c2)], dtype=torch.bool)
        return torch.where(abstain, torch.full_like(top.indices[:, 0], ABSTAIN), top.indices[:, 0]).to(x.device)

    def certify(self, model: nn.Module, x: torch.Tensor, n0: int | None = None, n: int | None = None,
                alpha: float | None = None, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY (Cohen et al. 2019, pseudocode): (prediction, L2 radius) per image; (-1, 0) = abstain.

        cA = argmax of the counts over n0 selection draws (first index on ties); nA = count of cA over n
        fresh draws; pA_lower = one-sided (1 - alpha) Clopper-Pearson bound.  If pA_lower > 1/2 return cA and
        radius sigma * Phi^-1(pA_lower), else abstain.  (The paper's pseudocode abstains when pA_lower <= 1/2;
        Cohen's code when < 1/2: they differ only at exactly 1/2, where the radius is 0.  We follow the paper.)
        Defaults: the defense's n0, n_certify, alpha (100, 100,000, 0.001 as in the paper).
        """
        n0 = self.n0 if n0 is None else int(n0)
        n = self.n_certify if n is None else int(n)
        alpha = self.alpha if alpha is None else float(alpha)
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
        c_a = self.sample_noise(model, x, n0, batch).argmax(1)
        counts = self.sample_noise(model, x, n, batch)
        n_a = counts.gather(1, c_a[:, None])[:, 0].cpu().numpy()
        p_a = lower_confidence_bound(n_a, n, alpha)
        ok = p_a > 0.5
        radius = np.where(ok, self.sigma * normal_ppf(np.where(ok, p_a, 0.75)), 0.0)
        pred = torch.where(torch.from_numpy(ok), c_a.cpu(), torch.full_like(c_a.cpu(), ABSTAIN))
        return pred, torch.from_numpy(radius)

    def classify(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The harness's decision: PREDICT with the defense's n and alpha, or the majority vote (``abstain=False``)."""
        if not self.abstain:
            return self.sample_noise(model, x, self.n).argmax(1) if len(x) else torch.zeros(0, dtype=torch.long, device=x.device)
        return self.predict(model, x)

    def surface(self, model: nn.Module, threat: str) -> nn.Module:
        """White-box: the soft smoothed classifier (m draws, fresh per call); oblivious: the base model."""
        return model if threat == "oblivious" else SoftSmoothed(model, self.sigma, self.m)


# --------------------------------------------------------------------------------------------------------
# Preemptive robustification of a smoothed classifier (preemptive paper, section 3.6)
# --------------------------------------------------------------------------------------------------------

@DEFENSES.register("preempt_smooth", "preemptive robustification of a smoothed classifier (Moon et al. 2022, sec. 3.6)")
class PreemptSmooth(PreemptRobustify, Randomized):
    """Algorithm 1 run on the soft smoothed classifier, then Cohen et al.'s PREDICT as the decision.

    Section 3.6 of the preemptive paper: the inner maximisation of eq. (2) attacks the soft smoothed classifier
    C~(x) = E_xi[C(x + xi)] (eq. 3) by T-step randomized PGD with M noise draws per step; the outer loss is the
    same soft loss at the adversarial point.  Here Algorithm 1 (``preempt``, every parameter unchanged) is handed
    ``SoftSmoothed(model, sigma, m)`` as its model: fresh draws at every inner step and for the outer loss, as
    in the official ``PreemptRobustL2Rand`` (M = 5).  With ``label="pred"`` the label c~(x_o) is the majority
    vote of f over ``n_label`` noisy copies (official code: 50).  The smoothed classifier is a part,
    ``smoothing`` (a ``Smoothing``; ``--set preempt_smooth.smoothing.sigma=0.25``): its sigma is the noise of
    Algorithm 1's draws too; the decision on x_r (and on any attacked image) is its PREDICT (``abstain=False``:
    the plain majority vote of appendix C.2); ``certify`` is its CERTIFY (Table 7); attacks see its white-box
    surface, ``SoftSmoothed(model, sigma, smoothing.m)``.
    Paper settings: L2, eps = delta = 0.5, sigma 0.1 (empirical, Table 5) or 0.25 (certified, Table 7); official
    outer lr 0.005 on CIFAR-10 (``beta``).
    """

    certifier = "smoothing"

    def __init__(self, norm: Literal["linf", "l2"] = "l2", eps: float = 0.5, delta: float | None = None,
                 maxiter: int = 100, steps: int = 20, alpha: float | None = None, n_starts: int = 1,
                 beta: float | None = None, init: Literal["random", "clean"] = "random",
                 label: Literal["pred", "true"] = "pred", exact: bool = False,
                 smoothing: Smoothing = Part("defenses", "smoothing"), m: int = 5, n_label: int = 50):
        super().__init__(norm=norm, eps=eps, delta=delta, maxiter=maxiter, steps=steps, alpha=alpha,
                         n_starts=n_starts, beta=beta, init=init, label=label, exact=exact)
        self.smoothing = smoothing.build() if isinstance(smoothing, Part) else smoothing
        if min(m, n_label) < 1:
            raise UsageError("preempt_smooth: m and n_label must be >= 1")
        self.m, self.n_label = int(m), int(n_label)

    def robustify_model(self, model: nn.Module) -> nn.Module:
        """The model Algorithm 1 optimises against: the soft smoothed classifier with m fresh draws per call."""
        return SoftSmoothed(model, self.smoothing.sigma, self.m)

    def robustify(self, model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:  # c~(x_o): majority vote of f over n_label noisy copies, no abstention
            y = self.smoothing.sample_noise(model, x.detach(), self.n_label).argmax(1)
        return super().robustify(self.robustify_model(model), x, y)

    def classify(self, model, x):
        return self.smoothing.classify(model, x)

    def surface(self, model, threat):
        return self.smoothing.surface(model, "white-box")


# --------------------------------------------------------------------------------------------------------
# Training recipe
# --------------------------------------------------------------------------------------------------------

@RECIPES.register("gaussian", "Gaussian data augmentation (Cohen et al. 2019): train on x + N(0, sigma^2 I), not clamped")
def gaussian(sigma: float = 0.25):
    """Each training batch is x + sigma * N(0, I), unclamped, as in Cohen et al.'s ``train.py``."""
    if not sigma >= 0:
        raise UsageError(f"gaussian: sigma must be >= 0, got {sigma}")
    return lambda model, x, y: x + sigma * torch.randn_like(x)
