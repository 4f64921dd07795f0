"""Safe-spot search and safe-spot-aware adversarial training (Moon, An & Song, "Exploiting safe spots in neural
networks for preemptive robustness and out-of-distribution detection", ICLR 2021 submission; "the safe-spot
paper" below; OpenReview mRNkPVHyIVX).

A safe spot of x_o is x_s in B_delta(x_o) ∩ [0,1] that keeps the label c(x_o) and lies in the eps-safe region:
no x_a in B_eps(x_s) changes the prediction (Definitions 1-2).  The defender finds it with the model's prediction
c(x_o), never the ground truth (section 3.2).  Three searches (section 4, "S-FGSM", "S-PGD", "S-Full"):

* S-FGSM: one targeted FGSM step of size delta TOWARDS c(x_o), i.e. DOWN the cross-entropy CE(x_s, c(x_o)):
  x_s = Pi_{B_delta(x_o) ∩ [0,1]}(x_o - delta * dir(grad CE(x_o, c(x_o)))), dir = sign (Linf) or g/||g||_2 (L2).
* S-PGD: 20 steps of such targeted PGD (step delta/4) within B_delta(x_o) ∩ [0,1]; from a random start in
  B_delta(x_o) by default, as the paper's PGD (section 3.2, "random start"), ``random_start=False`` starts at x_o.
  Both approximate x_s* = argmin_{x_s} CE(x_s, c(x_o)) (the surrogate of section 3.5, which drops the inner sup).
* S-Full: Algorithm 1 (eq. (2): minimise sup_{x_a in B_eps(x_s)} CE(x_a, c(x_o)) over x_s, the sup replaced by
  T-step PGD from N random starts, first-order update gradient of section 3.3).  The preemptive-robustification
  paper's Algorithm 1 is the same algorithm; this module reuses ``defenses.preempt.PreemptRobustify`` for it, with
  the safe-spot paper's start x_s = x_o (``init="clean"``; the preemptive code starts at a random point, which
  ``init="random"`` selects).

Both FGSM/PGD searches are the harness's own PGD (``attacks.pgd.PGD``, targeted, no early stop: the prediction is
already c(x_o) at the start, and the search must keep descending).

Safe-spot-aware adversarial training (section 3.5) is the recipe pair ``s-fgsm+adv`` / ``s-pgd+adv``: minimise
E[CE(x_a*, y_o; theta)] with x_s* = targeted FGSM / k-step PGD from x_o towards the GROUND-TRUTH y_o within
B_delta(x_o) (section 3.5, the approximation that replaces sup_{x_a} CE(x_a, y_o) by CE(x_s, y_o)) and x_a* = K-step
PGD (random start, step eps/4) UP CE(., y_o) within B_eps(x_s*).  The paper's CIFAR-10 models use FGSM or 10-step
PGD of step delta/4 for the search (section 4.1).
"""
from __future__ import annotations

from typing import Literal

import torch

from attacks.pgd import PGD
from harness.core.budget import Budget
from harness.core.defense import Preemptive
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES, RECIPES

from .preempt import PreemptRobustify, Settings, reconstruct

METHODS = ("fgsm", "pgd", "full")


def targeted_search(model, x_o: torch.Tensor, target: torch.Tensor, norm: str, delta: float, steps: int = 20,
                    alpha: float | None = None, random_start: bool = True) -> torch.Tensor:
    """S-FGSM / S-PGD (section 4): ``steps`` steps DOWN CE(x_s, target) within B_delta(x_o) ∩ [0,1].

    ``steps=1, alpha=delta, random_start=False`` is S-FGSM (targeted FGSM of size delta); otherwise targeted PGD of
    step ``alpha`` (default delta/4).  Returns x_s (detached), ||x_s - x_o|| <= delta, x_s in [0, 1].
    """
    if steps <= 0:
        return x_o.detach().clone()
    pgd = PGD(steps=steps, alpha=alpha, random_start=random_start, targeted=True, early_stop=False)
    # targeted CE: PGD ascends -CE(x, target); with early_stop=False and check=False it never asks for "fooled".
    return pgd.iterate(model, x_o.detach(), target, Budget(norm, delta), target)


def search(model, x_o: torch.Tensor, target: torch.Tensor, method: str, norm: str, delta: float,
           steps: int = 20, alpha: float | None = None, random_start: bool = True,
           full: PreemptRobustify | None = None) -> torch.Tensor:
    """The safe spot of x_o for the label ``target`` by ``method`` (fgsm | pgd | full), see the module docstring.

    ``full``: the Algorithm 1 instance to run (its eps, delta, MAXITER, T, N, beta, init); required for "full".
    """
    if method == "fgsm":
        return targeted_search(model, x_o, target, norm, delta, steps=1, alpha=delta, random_start=False)
    if method == "pgd":
        return targeted_search(model, x_o, target, norm, delta, steps=steps, alpha=alpha, random_start=random_start)
    if method == "full":
        if full is None:
            raise UsageError("safe spot search 'full' needs the Algorithm 1 settings (a PreemptRobustify)")
        return full.robustify(model, x_o, target)
    raise UsageError(f"safe spot method must be one of {', '.join(METHODS)}, got {method!r}")


@DEFENSES.register("safe_spot", "safe-spot search (Moon et al., safe-spot paper): method=fgsm|pgd|full (S-FGSM, S-PGD, "
                                "S-Full = Algorithm 1) within delta, towards the predicted class")
class SafeSpot(Preemptive):
    """Preemptive safe-spot search of the safe-spot paper (section 3.2 and section 4): x_o -> x_s in B_delta(x_o) ∩ [0,1].

    ``method``: "fgsm" (S-FGSM: targeted FGSM of size delta towards c(x_o)), "pgd" (S-PGD: ``steps`` = 20 targeted
    PGD steps of ``alpha`` = delta/4 towards c(x_o), random start if ``random_start``) or "full" (S-Full = Algorithm
    1, run by ``defenses.preempt.PreemptRobustify``: MAXITER = ``maxiter`` outer steps, each on the mean first-order
    update gradient of ``n_starts`` T-step PGD adversarial examples (T = ``inner_steps``, step ``inner_alpha``,
    default eps/4) of x_s; outer learning rate ``beta`` (None: preempt's default); start ``init`` ("clean":
    x_s = x_o, Algorithm 1 of the safe-spot paper; "random": the preemptive code's random start)).
    ``eps``: the attacker budget the search prepares for (used by "full" only); ``delta``: the defender's budget
    (default eps: "we set delta = eps for all experiments", section 4).  ``label``: "pred" (c(x_o), the paper) or
    "true" (ground truth, Definition 2's known-label setting).
    """

    follows_budget = ("norm", "eps", "delta")  # the run's budget unless --set gives them (delta = eps)

    def __init__(self, method: Literal["fgsm", "pgd", "full"] = "full", norm: Literal["linf", "l2"] = "linf",
                 eps: float = 0.1, delta: float | None = None, steps: int = 20, alpha: float | None = None,
                 random_start: bool = True, maxiter: int = 100, inner_steps: int = 20,
                 inner_alpha: float | None = None, n_starts: int = 1, beta: float | None = None,
                 init: Literal["clean", "random"] = "clean", label: Literal["pred", "true"] = "pred",
                 exact: bool = False):
        if method not in METHODS:
            raise UsageError(f"safe_spot: method must be one of {', '.join(METHODS)}, got {method!r}")
        if norm not in ("linf", "l2"):
            raise UsageError(f"safe_spot: norm must be linf or l2, got {norm!r}")
        if not eps > 0 or (delta is not None and not delta > 0):
            raise UsageError("safe_spot: eps and delta must be positive")
        if steps < 1 or maxiter < 0 or inner_steps < 0 or n_starts < 1:
            raise UsageError("safe_spot: steps >= 1, maxiter >= 0, inner_steps >= 0 and n_starts >= 1 are required")
        self.method, self.norm, self.eps = method, norm, float(eps)
        self.delta = float(eps if delta is None else delta)
        self.steps, self.alpha, self.random_start = int(steps), alpha, bool(random_start)
        self.maxiter, self.inner_steps, self.inner_alpha, self.n_starts = int(maxiter), int(inner_steps), inner_alpha, int(n_starts)
        self.beta, self.init, self.label, self.exact = beta, init, label, bool(exact)

    def reconstruct(self, model, x_seen: torch.Tensor, eps: float) -> torch.Tensor:
        """Algorithm 3 of the preemptive paper with Algorithm 1's default settings at this search's norm and delta
        (the attacker knows the defense, and the reconstruction attack is defined for Algorithm 1)."""
        return reconstruct(model, x_seen.detach(), Settings(self.norm, eps, self.delta or eps))

    def full(self) -> PreemptRobustify:
        """Algorithm 1 with these settings (the preemptive-robustification implementation)."""
        return PreemptRobustify(norm=self.norm, eps=self.eps, delta=self.delta, maxiter=self.maxiter,
                                steps=self.inner_steps, alpha=self.inner_alpha, n_starts=self.n_starts,
                                beta=self.beta, init=self.init, label="pred", exact=self.exact)

    def robustify(self, model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_s for a batch: ||x_s - x_o|| <= delta, x_s in [0, 1]; ``y`` None: towards c(x_o)."""
        x = x.detach()
        return search(model, x, self.target(model, x, y), self.method, self.norm, self.delta, self.steps,
                      self.alpha, self.random_start,
                      self.full() if self.method == "full" else None).detach()


# --------------------------------------------------------------------------------------------------------------
# Safe-spot-aware adversarial training (section 3.5)
# --------------------------------------------------------------------------------------------------------------

def safe_spot_adversarial(model, x: torch.Tensor, y: torch.Tensor, method: str, norm: str, eps: float, delta: float,
                          search_steps: int, search_alpha: float | None, search_random_start: bool,
                          attack: PGD, return_spot: bool = False):
    """x_a* of section 3.5 for labels ``y``: x_s* = the S-FGSM / S-PGD safe spot of x towards y within
    B_delta(x), then x_a* = ``attack`` (PGD UP CE(., y), random start) within B_eps(x_s*) ∩ [0,1].
    With ``return_spot`` also returns x_s*."""
    x_s = search(model, x, y, method, norm, delta, search_steps, search_alpha, search_random_start)
    x_a = attack.iterate(model, x_s, y, Budget(norm, eps), None)
    return (x_a, x_s) if return_spot else x_a


def _recipe(method: str, norm: str, eps: float, delta: float | None, search_steps: int, search_alpha: float | None,
            search_random_start: bool, steps: int, alpha: float | None):
    if norm not in ("linf", "l2"):
        raise UsageError(f"{method} safe-spot-aware training: norm must be linf or l2, got {norm!r}")
    delta = eps if delta is None else delta
    attack = PGD(steps=steps, alpha=alpha, early_stop=False)

    def make_batch(model, x, y):
        return safe_spot_adversarial(model, x, y, method, norm, eps, delta, search_steps, search_alpha,
                                     search_random_start, attack)

    return make_batch


@RECIPES.register("s-fgsm+adv", "safe-spot-aware adversarial training (safe-spot paper, section 3.5), S-FGSM search")
def s_fgsm_adv(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, delta: float | None = None, steps: int = 10,
               alpha: float | None = None):
    """Section 3.5 with the safe spot found by targeted FGSM (step delta, default delta = eps) towards the ground
    truth y_o; then K = ``steps`` PGD steps (step ``alpha`` = eps/4, random start) up CE(., y_o) within
    B_eps(x_s*); the model minimises CE(x_a*, y_o)."""
    return _recipe("fgsm", norm, eps, delta, 1, None, False, steps, alpha)


@RECIPES.register("s-pgd+adv", "safe-spot-aware adversarial training (safe-spot paper, section 3.5), S-PGD search")
def s_pgd_adv(norm: Literal["linf", "l2"] = "linf", eps: float = 0.1, delta: float | None = None,
              search_steps: int = 10, search_alpha: float | None = None, search_random_start: bool = True,
              steps: int = 10, alpha: float | None = None):
    """Section 3.5 with the safe spot found by ``search_steps`` = 10 steps of targeted PGD (step delta/4, as in
    section 4.1) towards the ground truth y_o within B_delta(x_o); then K = ``steps`` PGD steps (step eps/4,
    random start) up CE(., y_o) within B_eps(x_s*); the model minimises CE(x_a*, y_o)."""
    return _recipe("pgd", norm, eps, delta, search_steps, search_alpha, search_random_start, steps, alpha)
