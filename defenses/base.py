"""The four kinds of defense, by where they act (DESIGN.md, Concepts).

Every defense answers three questions the threat models ask (``harness.threat``):
``prepare(model, x, y)``: what the attacker is handed (x_r for a preemptive defense, x otherwise);
``classify(model, x)``: the defended decision on an input (-1 for abstain or reject);
``surface(model, threat)``: the differentiable function a gradient attack sees under that threat model.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from harness.registry import DEFENSES

ABSTAIN = -1


class Defense:
    kind: ClassVar[str] = "none"
    threats: ClassVar[tuple[str, ...]] = ("white-box",)
    randomized: ClassVar[bool] = False

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def classify(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).argmax(1)

    def surface(self, model: nn.Module, threat: str) -> nn.Module:
        return model

    def describe(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}


class Preemptive(Defense):
    """Acts before the attacker: ``robustify(model, x_o) -> x_r`` with ||x_r - x_o|| <= delta; x_o is discarded.

    Grey-box attackers treat x_r as the original (their ball is B_eps(x_r)); white-box attackers must land
    inside B_eps(x_o) (preemptive paper, Definitions 2-3).
    """

    kind = "preemptive"
    threats = ("grey-box", "white-box")
    norm: str = "linf"
    delta: float = 0.0
    label: str = "pred"  # "pred": robustify towards c(x_o) (no ground truth needed); "true": the ground truth

    def robustify(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, model, x, y):
        return self.robustify(model, x, y if self.label == "true" else None)

    @staticmethod
    @torch.no_grad()
    def target(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The label robustification keeps: ``y`` when given, else the prediction c(x_o)."""
        return model(x).argmax(1) if y is None else y


class Preprocessor(Defense, nn.Module):
    """Acts after the attacker, in front of the classifier: the defended model is ``model(P(x))``.

    Oblivious attackers attack the bare classifier; white-box attackers differentiate through P
    (``surface``); BPDA and EOT attacks replace P's backward pass or average over its randomness.
    """

    kind = "preprocessor"
    threats = ("oblivious", "white-box")

    def __init__(self):
        nn.Module.__init__(self)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.purify(x)

    @torch.no_grad()
    def classify(self, model, x):
        return model(self.purify(x)).argmax(1)

    def surface(self, model, threat):
        return model if threat == "oblivious" else nn.Sequential(self, model)


class Wrapper(Defense):
    """Replaces the classifier's decision rule (randomized smoothing): ``classify`` may abstain (-1)."""

    kind = "wrapper"
    threats = ("oblivious", "white-box")
    randomized = True


class Detector(Defense):
    """Scores inputs beside the classifier and rejects some: ``score`` is higher for in-distribution inputs."""

    kind = "detector"
    threats = ("oblivious", "white-box")

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@DEFENSES.register("none", "no defense: the bare classifier")
class NoDefense(Defense):
    pass
