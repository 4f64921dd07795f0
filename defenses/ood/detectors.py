"""The OOD detectors in the harness (``Detector`` kind; ``defenses.ood``): ``msp_detector`` and ``safe_spot_ood``
reject inputs whose score is below the 95%-TPR threshold set on clean in-distribution data."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from attacks.pgd import PGD
from harness.core.budget import Budget
from harness.core.defense import ABSTAIN, Detector
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES, Part
from harness.data import load
from harness.ood_metrics import TPR, threshold_at_tpr

from ..safe_spot import SafeSpot
from .scores import combine, msp, safe_spot_parts, safe_spot_score


class ThresholdDetector(Detector):
    """A Detector that rejects (classify -> -1) inputs whose score is below tau, and otherwise returns the
    classifier's prediction.  tau = ``threshold`` if given, else the largest value that accepts >= ``tpr`` of the
    clean ``calib_split`` images of ``dataset`` (calibrated on first use with the evaluated model, on the first
    ``calib_n`` = 1000 images of the split, all of them for None: the safe-spot score costs a search per image, so a
    whole CIFAR training split would take far longer than the evaluation).  Scores of the last ``classify`` call are reused by a ``score`` call
    on the very same tensor (so the harness's rejection and detection numbers come from one scoring)."""

    receives = ("dataset", "data_dir")  # the run's (harness.core.defense.RunContext)

    def __init__(self, tpr: float = TPR, threshold: float | None = None, dataset: str = "digits",
                 calib_split: str = "train", calib_n: int | None = 1000, data_dir: str | None = None):
        if not 0 < tpr <= 1:
            raise UsageError(f"detector: tpr must be in (0, 1], got {tpr}")
        self.tpr, self.threshold, self.dataset, self.calib_split = float(tpr), threshold, dataset, calib_split
        self.calib_n, self.data_dir = calib_n, data_dir
        self._tau: float | None = None if threshold is None else float(threshold)
        self._cache = None

    def _score(self, model, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, model, x: torch.Tensor) -> torch.Tensor:
        c = self._cache
        if c is not None and c[0] is x and c[1] == x._version:
            return c[2]
        s = self._score(model, x.detach()).detach()
        self._cache = (x, x._version, s)
        return s

    @property
    def tau(self) -> float | None:
        return self._tau

    def calibrate(self, model, x: torch.Tensor | None = None) -> float:
        """Set tau at ``tpr`` of the scores of ``x`` (default: the calibration split)."""
        if x is None:

            data = load(self.dataset, self.calib_split, self.data_dir)
            x = data.take(None if self.calib_n is None else min(self.calib_n, len(data))).x
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self._tau = threshold_at_tpr(self.score(model, x.to(device)).cpu(), self.tpr)
        return self._tau

    def prepare(self, model, x, y):
        if self._tau is None:
            self.calibrate(model)
        return x

    @torch.no_grad()
    def classify(self, model, x: torch.Tensor) -> torch.Tensor:
        if self._tau is None:
            self.calibrate(model)
        pred = model(x).argmax(1)
        return torch.where(self.score(model, x) >= self._tau, pred, torch.full_like(pred, ABSTAIN))


@DEFENSES.register("msp_detector", "maximum-softmax-probability OOD detector (Hendrycks & Gimpel 2017): rejects below "
                                   "the 95%-TPR threshold")
class MSPDetector(ThresholdDetector):
    """Score max_y C(x)_y; rejects inputs below tau (95% TPR on the clean training split by default)."""

    def _score(self, model, x):
        return msp(model, x)

    def surrogate_score(self, model, x):
        return F.softmax(model(x), 1).amax(1)


@DEFENSES.register("safe_spot_ood", "safe-spot OOD detector (safe-spot paper, sec. 3.6): D = mu MSP(x) + (1-mu) MSP(x_a*), "
                                    "rejects below the 95%-TPR threshold")
class SafeSpotOOD(ThresholdDetector):
    """Score D(x) = mu * MSP(x) + (1 - mu) * MSP(x_a*) (section 3.6): x_s* = the safe spot of x for c(x), found by the
    part ``spot`` (a ``safe_spot`` search: default "full" = Algorithm 1; ``--set safe_spot_ood.spot.method=pgd``),
    x_a* = the part ``adversary`` (PGD, default 20 steps of eps/4 from a random start, every step taken) up
    CE(., c(x)) within B_eps(x_s*).  The budget ``norm``, ``eps``, ``delta`` is the detector's: it hands it to both
    parts.  Rejects inputs below tau (95% TPR on the clean training split by default).  The model should be trained
    for it (eq. (4), ``train_ood``; or at least safe-spot-aware, e.g. the zoo's ``digits_cnn_spgd_adv``, the model of
    Figure 3).  ``surrogate_score``: D with x_a* - x held constant (straight-through), what ``pgd_detector``
    differentiates.
    """

    follows_budget = ("norm", "eps", "delta")  # the run's budget unless --set gives them (delta = eps)

    def __init__(self, mu: float = 0.5, norm: Literal["linf", "l2"] = "linf", eps: float = 0.1,
                 delta: float | None = None, spot: Part = Part("defenses", "safe_spot"),
                 adversary: PGD = Part("attacks", "pgd", random_start=True, early_stop=False),
                 adv_term: Literal["msp", "pred"] = "msp", tpr: float = TPR, threshold: float | None = None,
                 dataset: str = "digits", calib_split: str = "train", calib_n: int | None = 1000,
                 data_dir: str | None = None):
        super().__init__(tpr, threshold, dataset, calib_split, calib_n, data_dir)
        if not 0 <= mu <= 1:
            raise UsageError(f"safe_spot_ood: mu must be in [0, 1], got {mu}")
        budget = {"norm": norm, "eps": eps, "delta": delta}
        if isinstance(spot, Part):  # the part's name and keywords: built here with the detector's budget
            given = sorted(set(budget) & set(spot.defaults))
            if given:
                raise UsageError(f"safe_spot_ood: the budget is the detector's; set safe_spot_ood.{given[0]}, "
                                 f"not spot.{given[0]}")
            spot = spot.build(**budget)
        adversary = adversary.build() if isinstance(adversary, Part) else adversary
        if not isinstance(spot, SafeSpot) or not isinstance(adversary, PGD):
            raise UsageError("safe_spot_ood: spot must be a safe_spot search and adversary a PGD attack")
        self.mu, self.adv_term = float(mu), adv_term
        self.spot = spot
        self.norm, self.eps, self.delta = self.spot.norm, self.spot.eps, self.spot.delta
        self.adversary = adversary

    def describe(self) -> dict:
        return {**super().describe(), "spot": self.spot.describe(),
                "adversary": self.adversary.describe(Budget(self.norm, self.eps))}

    def _score(self, model, x):
        return safe_spot_score(model, x, self.spot, self.adversary, self.mu, self.adv_term)

    def surrogate_score(self, model, x):
        r = safe_spot_parts(model, x.detach(), self.spot, self.adversary)
        x_a = x + (r["x_a"] - x).detach()  # straight-through: the safe-spot/adversarial displacement held constant
        return combine(F.softmax(model(x), 1), F.softmax(model(x_a), 1), r["c"], self.mu, self.adv_term)
