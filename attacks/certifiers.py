"""Certifiers as attack cells: per-sample certificates from the bounds of ``harness.bounds``.

``certify_ibp`` (Gowal et al. 2018), ``certify_crown_ibp`` (Zhang et al. 2020) and ``certify_crown`` (Zhang et al.
2018): a sample is certified iff every margin lower bound z_y - z_j (j != y) over the eps-ball around the image the
attacker is handed (x for no defense, x_r for a preemptive one: what A5 certifies) is positive.  The engine then
reports certified accuracy (``certified_acc`` in results.csv) and checks that no attack breaks a certified sample.
``sound`` (default on): the margins are bounded in float64 minus a bound on the rounding error, so a certificate
holds under floating-point arithmetic (``harness.bounds.sound``); ``sound=false`` certifies on the float32 bounds
(faster; a margin within about 1e-6 of 0 may then be no certificate).
"""
from __future__ import annotations

from typing import ClassVar

import torch

from harness import bounds
from harness.core.attack import NO_CONTEXT, Attack, AttackContext, AttackResult
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.registry import ATTACKS


class BoundCertifier(Attack):
    """Certify each sample with the ``method`` bounds over B_eps(x) ∩ [0, 1] (Linf) or B_eps(x) (L2); ``sound``:
    bounds that hold under floating-point rounding (``harness.bounds.sound``)."""

    certifies = True
    method: ClassVar[str] = "ibp"

    def __init__(self, threat: str | None = None, sound: bool = True):
        self.threat, self.sound = threat, bool(sound)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        return x.detach().clone()

    def run(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
            context: AttackContext = NO_CONTEXT) -> AttackResult:
        try:
            with torch.no_grad():
                ok = bounds.certified(model, x.detach(), y, budget.eps, norm=budget.norm, method=self.method,
                                      sound=self.sound)
        except TypeError as err:  # a layer the bounds cannot read (a purifier network, say)
            raise UsageError(f"certify_{self.method.replace('-', '_')}: {str(err).splitlines()[0]}") from None
        return AttackResult(x.detach().clone(), extra={"certified": ok.float()})


@ATTACKS.register("certify_ibp", "certified robustness by IBP bounds (Gowal et al. 2018): per-sample certificates")
class CertifyIBP(BoundCertifier):
    method = "ibp"


@ATTACKS.register("certify_crown_ibp", "certified robustness by CROWN-IBP bounds (Zhang et al. 2020)")
class CertifyCrownIBP(BoundCertifier):
    method = "crown-ibp"


@ATTACKS.register("certify_crown", "certified robustness by CROWN bounds (Zhang et al. 2018; small networks)")
class CertifyCrown(BoundCertifier):
    method = "crown"
