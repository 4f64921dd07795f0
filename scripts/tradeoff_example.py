r"""The robustness/accuracy trade-off example of Tsipras et al. (2019), attacked with the harness's own PGD.

Source: the lecture "Defenses against adversarial attacks", slides "Trade-off between robustness and accuracy"
(not in this repository), which present the example of D. Tsipras,
S. Santurkar, L. Engstrom, A. Turner and A. Madry, "Robustness May Be at Odds with Accuracy", ICLR 2019
(arXiv:1805.12152), Section 2 (its Theorem 2.1: for eps >= 2 eta, any classifier with standard accuracy
>= 1 - delta has Linf-robust accuracy <= p / (1 - p) * delta).

The distribution, on x in R^{d+1} with label y in {-1, +1}::

    y ~ U({-1, +1}),
    x_1 = +y with probability p,  -y with probability 1 - p,          (one strongly correlated feature)
    x_2, ..., x_{d+1} ~ iid N(eta y, 1),                               (d weakly correlated features)

with p = 0.95 and eta = Theta(1/sqrt(d)); here eta = 3/sqrt(d) by default (``--eta`` overrides).  The two
linear classifiers of the slides::

    f_std(x) = sign(w_std^T x),  w_std = [0, 1/d, ..., 1/d]      (averages the weak features)
    f_rob(x) = sign(w_rob^T x),  w_rob = [1, 0, ..., 0]          (reads the strong feature only)

Closed forms (Phi is the standard normal CDF), for an Linf adversary with budget eps = 2 eta::

    P[f_std(x) = y]  = P[N(eta, 1/d) > 0]  = Phi(eta sqrt(d))            = Phi(3)  > 0.99   (eta = 3/sqrt(d))
    the optimal Linf attack on f_std adds -eps y to every weak feature: x'_i ~ N(eta y, 1) - 2 eta y = N(-eta y, 1),
    P[f_std(x') = y] = P[N(eta - eps, 1/d) > 0] = Phi((eta - eps) sqrt(d)) = Phi(-3) < 0.01
    P[f_rob(x) = y]  = p = 0.95,
    P[f_rob(x') = y] = p as long as eps < 1 (eta < 1/2): moving x_1 = +-1 by less than 1 cannot change its sign
                       (0 once eps >= 1).

So f_std is the more accurate (99.87% vs 95%) and f_rob the more robust (95% vs 0.13%): the trade-off.

The robust accuracies printed are NOT the closed forms applied to the data: they come from running
``harness.core.registry.ATTACKS.create("pgd_linf", ...)`` (``attacks.pgd.PGDLinf``, a ``PGD``: 20 steps of eps/4, random start,
cross-entropy) against the two models, which are ``torch.nn.Module``s with two logits [-w^T x, w^T x]
(class 0 is y = -1, class 1 is y = +1; argmax = sign).

The [0, 1] box.  The harness's attacks are written for images: ``harness.core.geometry.project`` (every PGD step) and the
random start always clamp to [0, 1].  The features here are unbounded reals, so the data are handed to the
attack through an affine map folded into the models: u = 1/2 + x / S, and each model first computes
x = S (u - 1/2).  The scale S is chosen from the sample, S = 2 (max |x| + eps) + 1 rounded up, so that the eps-ball
around every sample lies strictly inside the box; the clamp is then a no-op and the attack is the unconstrained
Linf attack on R^{d+1} of the slides.  The budget scales with the map: |u' - u|_inf <= eps / S  <=>
|x' - x|_inf <= eps, so the attack gets ``eps = eps / S``; the perturbations reported are mapped back to x.
Everything is in float64 so that mapping back keeps the budget to ~1e-15.

    OMP_NUM_THREADS=1 python scripts/tradeoff_example.py                    # d = 1000, n = 10000, p = 0.95
    OMP_NUM_THREADS=1 python scripts/tradeoff_example.py --d 400 --n 2000 --seed 1
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from harness.core.budget import Budget
from harness.core.registry import ATTACKS

DTYPE = torch.float64


def default_eta(d: int) -> float:
    """eta = 3/sqrt(d): the smallest eta with which the slides' bound gives f_std > 99% standard accuracy."""
    return 3.0 / math.sqrt(d)


def sample(n: int, d: int, p: float = 0.95, eta: float | None = None, seed: int = 0):
    """n draws (x, y) of the distribution above: x of shape (n, d+1) and y in {-1, +1}, float64, seeded."""
    eta = default_eta(d) if eta is None else eta
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g).to(DTYPE) * 2 - 1
    agree = torch.rand(n, generator=g, dtype=DTYPE) < p
    x1 = torch.where(agree, y, -y)
    weak = torch.randn(n, d, generator=g, dtype=DTYPE) + eta * y[:, None]
    return torch.cat([x1[:, None], weak], 1), y


class LinearSign(nn.Module):
    """sign(w^T x) as two logits [-w^T x, w^T x] of inputs u in [0, 1]^{d+1}, with x = scale * (u - 1/2)."""

    def __init__(self, w: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.register_buffer("w", w.to(DTYPE))
        self.scale = float(scale)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = (self.scale * (u - 0.5)) @ self.w
        return torch.stack([-s, s], 1)


def f_std(d: int, scale: float = 1.0) -> LinearSign:
    """w_std = [0, 1/d, ..., 1/d]."""
    w = torch.full((d + 1,), 1.0 / d, dtype=DTYPE)
    w[0] = 0.0
    return LinearSign(w, scale).eval()


def f_rob(d: int, scale: float = 1.0) -> LinearSign:
    """w_rob = [1, 0, ..., 0]."""
    w = torch.zeros(d + 1, dtype=DTYPE)
    w[0] = 1.0
    return LinearSign(w, scale).eval()


def unit_scale(x: torch.Tensor, eps: float) -> float:
    """S with max|x| + eps < S/2: the eps-balls around the data lie strictly inside [0,1] under u = 1/2 + x/S."""
    return float(math.ceil(2 * (x.abs().max().item() + eps) + 1))


def to_unit(x: torch.Tensor, scale: float) -> torch.Tensor:
    return 0.5 + x / scale


def from_unit(u: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * (u - 0.5)


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def closed_forms(d: int, p: float = 0.95, eta: float | None = None, eps: float | None = None) -> dict:
    """The slides' accuracies: {classifier: (standard, Linf-robust at eps)}; eps defaults to 2 eta."""
    eta = default_eta(d) if eta is None else eta
    eps = 2 * eta if eps is None else eps
    rd = math.sqrt(d)
    return {"f_std": (normal_cdf(eta * rd), normal_cdf((eta - eps) * rd)),
            "f_rob": (p, p if eps < 1 else 0.0)}


@dataclass
class Result:
    """One classifier's per-sample outcomes on the same n samples."""

    name: str
    clean_correct: torch.Tensor    # bool (n,): f(x) = y
    adv_correct: torch.Tensor      # bool (n,): f(x_adv) = y, x_adv from the harness's PGD
    linf: torch.Tensor             # float (n,): |x_adv - x|_inf in the original (unbounded) coordinates
    linf_unit: torch.Tensor        # float (n,): |u_adv - u|_inf in the attack's [0,1] coordinates
    closed: tuple[float, float]    # (standard, robust) closed forms
    inside: bool                   # every attacked point strictly inside (0,1): the clamp never acted

    @property
    def standard(self) -> float:
        return self.clean_correct.double().mean().item()

    @property
    def robust(self) -> float:
        return self.adv_correct.double().mean().item()


@dataclass
class Experiment:
    n: int
    d: int
    p: float
    eta: float
    eps: float
    scale: float
    eps_unit: float
    seed: int
    x: torch.Tensor
    y: torch.Tensor
    results: dict[str, Result] = field(default_factory=dict)
    attack_params: dict = field(default_factory=dict)
    seconds: float = 0.0


def make_attack(steps: int = 20):
    """The harness's Linf PGD from the registry (20 steps of eps/4 from a random start, cross-entropy); the budget
    goes with each call.  The registry imports its module (``attacks.pgd``) alone, not the defenses and model zoo,
    which this example does not need."""
    return ATTACKS.create("pgd_linf", steps=steps)


def run(n: int = 10_000, d: int = 1000, p: float = 0.95, seed: int = 0, eta: float | None = None,
        steps: int = 20, batch_size: int = 1000) -> Experiment:
    """Sample, build f_std and f_rob, and measure standard and PGD Linf (eps = 2 eta) robust accuracies.

    The attack runs on batches of ``batch_size`` samples (one batch of 10^7 float64 features is ~4x slower:
    every PGD step copies it several times)."""
    t0 = time.perf_counter()
    eta = default_eta(d) if eta is None else float(eta)
    eps = 2 * eta
    x, y = sample(n, d, p, eta, seed)
    scale = unit_scale(x, eps)
    eps_unit = eps / scale
    u = to_unit(x, scale)
    label = ((y + 1) / 2).long()  # class index: 0 <-> y = -1, 1 <-> y = +1
    attack, budget = make_attack(steps), Budget("linf", eps_unit)
    exp = Experiment(n, d, p, eta, eps, scale, eps_unit, seed, x, y, attack_params=attack.describe(budget))
    closed = closed_forms(d, p, eta, eps)
    for name, build in (("f_std", f_std), ("f_rob", f_rob)):
        model = build(d, scale)
        torch.manual_seed(seed)  # the attack's random start draws from the global generator
        u_adv = torch.cat([attack.perturb(model, u[i:i + batch_size], label[i:i + batch_size], budget)
                           for i in range(0, n, batch_size)])
        with torch.no_grad():
            clean = model(u).argmax(1) == label
            adv = model(u_adv).argmax(1) == label
        du = (u_adv - u).abs().amax(1)
        dx = (from_unit(u_adv, scale) - x).abs().amax(1)
        inside = bool(((u_adv > 0) & (u_adv < 1)).all())
        exp.results[name] = Result(name, clean, adv, dx, du, closed[name], inside)
    exp.seconds = time.perf_counter() - t0
    return exp


def markdown_table(exp: Experiment) -> str:
    rows = ["| Classifier | Standard accuracy (empirical / closed form) | "
            f"Robust accuracy, Linf eps = 2 eta = {exp.eps:.4f} (harness PGD / closed form) |",
            "|---|---|---|"]
    for r in exp.results.values():
        rows.append(f"| {r.name} | {100 * r.standard:.2f}% / {100 * r.closed[0]:.2f}% | "
                    f"{100 * r.robust:.2f}% / {100 * r.closed[1]:.2f}% |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of samples (default 10000)")
    ap.add_argument("--d", type=int, default=1000, help="number of weak features (default 1000)")
    ap.add_argument("--p", type=float, default=0.95, help="P[x_1 = y] (default 0.95)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eta", type=float, default=None, help="mean of the weak features (default 3/sqrt(d))")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    ap.add_argument("--batch-size", type=int, default=1000, help="samples per attack batch (default 1000)")
    a = ap.parse_args(argv)
    exp = run(a.n, a.d, a.p, a.seed, a.eta, a.steps, a.batch_size)
    print(f"Tsipras et al. (2019) trade-off example: n={exp.n}, d={exp.d}, p={exp.p}, eta={exp.eta:.4f}, "
          f"eps=2*eta={exp.eps:.4f}, seed={exp.seed}")
    print(f"attack: pgd_linf {exp.attack_params} on u = 1/2 + x/{exp.scale:g} (eps/S = {exp.eps_unit:.6f}); "
          f"max |x_adv - x|_inf = {max(r.linf.max().item() for r in exp.results.values()):.6f}\n")
    print(markdown_table(exp))
    print(f"\n({exp.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
