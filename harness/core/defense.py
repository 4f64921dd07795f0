"""The four kinds of defense, by where they act (docs/DESIGN.md, Concepts).

Every defense answers the questions the threat models ask (``harness.threat``):
``prepare(model, x, y)``: what the attacker is handed (x_r for a preemptive defense, x otherwise);
``classify(model, x)``: the defended decision on an input (-1 for abstain or reject);
``surface(model, threat)``: the differentiable function a gradient attack sees under that threat model;
The optional capabilities (``harness.core.capabilities``: Reconstructs, Randomized, Approximates, Certifies,
TrainsAlone, TrainsForTarget) are Protocols a class names among its bases: ``Preemptive`` reconstructs, a
``Wrapper`` is randomized, and each plugin declares the rest.  ``Detector.surrogate_score`` and
``Detector.attack_parts`` are what adaptive attacks on detectors use; ``SoftSmoothed`` is the white-box surface of a
smoothing ``Wrapper``.  Imports nothing of the project.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .capabilities import Certifies, Randomized, Reconstructs
from .errors import UsageError

ABSTAIN = -1
# The class flags of earlier versions and the capability that replaced each (docs/CONTRACTS.md).
RETIRED_FLAGS = {"randomized": "Randomized", "has_approx": "Approximates", "trains_alone": "TrainsAlone",
                 "trains_for_target": "TrainsForTarget"}


@dataclass(frozen=True)
class RunContext:
    """What a defense that trains or calibrates on first use may learn from the run, unless ``--set`` gives it.

    ``dataset``: the run's dataset; ``data_dir``: where its files lie; ``target``: the zoo model the defense will
    stand in front of (a purifier trains for it), None when the run's model is no zoo model.  A defense declares
    which of these its parameters of the same names receive (``Defense.receives``).  Whether its training shows
    progress bars is no fact of the run: ``harness.core.progress`` says."""

    dataset: str = "digits"
    data_dir: str | None = None
    target: str | None = None

    def for_defense(self, receives: tuple[str, ...]) -> dict:
        """The known facts (not None) among ``receives``, as keyword arguments."""
        return {k: v for k, v in asdict(self).items() if k in receives and v is not None}


class Defense:
    """No defense (the ``none`` kind), and what every kind answers."""

    kind: ClassVar[str] = "none"  # a name for reports; the engine asks the methods and capabilities below
    threats: ClassVar[tuple[str, ...]] = ("white-box",)
    # The threat model of an attack that asks for none (``Attack.threat``): white-box, grey-box for a preemptive one.
    default_threat: ClassVar[str] = "white-box"
    # ``classify`` may reject an input (-1) as a detector does: a rejection then counts as not defended, and the
    # verdict carries the reading where it counts as defended (``harness.threat``).
    rejects: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        """A class that still sets a retired capability flag would be read as not having the capability (a
        randomized defense judged on one pass): it fails where it is defined, naming the Protocol to declare."""
        super().__init_subclass__(**kw)
        for flag, capability in RETIRED_FLAGS.items():
            if flag in vars(cls):
                raise TypeError(f"{cls.__qualname__}.{flag} is retired: name {capability} (harness.core.capabilities) "
                                f"among the class's bases (docs/CONTRACTS.md)")

    def threat_for(self, threat: str) -> str:
        """The threat model ``threat`` runs under against this defense.  With no defense every threat model
        applies, and knowing the defense changes nothing (oblivious is white-box)."""
        return "white-box" if threat == "oblivious" else threat

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def classify(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).argmax(1)

    def surface(self, model: nn.Module, threat: str) -> nn.Module:
        return model

    # Which part of the defense CERTIFIES an L2 radius (Cohen et al.'s CERTIFY; ``harness certify``): "" the
    # defense itself, the name of a part (``preempt_smooth``: its ``smoothing``), None: none.
    certifier: ClassVar[str | None] = None

    def certifying_part(self) -> Certifies:
        """The (part of the) defense whose ``certify(model, x, n0=, n=, alpha=)`` ``harness certify`` calls."""
        if self.certifier is None:
            raise NotImplementedError(f"{type(self).__name__} certifies nothing")
        return getattr(self, self.certifier) if self.certifier else self

    # The parameters that take the run's facts (``RunContext``: dataset, data_dir, target) unless --set
    # gives them.
    receives: ClassVar[tuple[str, ...]] = ()
    # The parameters that take the run's budget unless ``--set`` gives them: "norm" its norm, "eps" and "delta" its
    # eps (preempt: delta = eps).  The engine builds such a defense once per budget of a several-eps run
    # (``harness.lineup``); a defense that declares none is built once and serves every budget.
    follows_budget: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> dict:
        """The resolved parameters (for run.json's config); a part's own, nested under its name; the name
        the defense is registered under."""
        from .registry import DEFENSES

        out = {k: v.describe() if isinstance(v, Defense) else v for k, v in vars(self).items()
               if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), Defense))}
        name = DEFENSES.name_of(self)
        if name is not None:
            out["registry_name"] = name
        return out


class Kind(Defense):
    """What the four kinds share: a threat model applies only if the kind lists it in ``threats``."""

    def threat_for(self, threat: str) -> str:
        if threat not in self.threats:
            raise UsageError(f"threat {threat!r} does not apply to the {self.kind} defense; use one of "
                             f"{', '.join(self.threats)}")
        return threat


class Preemptive(Kind, Reconstructs):
    """Acts before the attacker: ``robustify(model, x_o) -> x_r`` with ||x_r - x_o|| <= delta; x_o is discarded.

    Grey-box attackers treat x_r as the original (their ball is B_eps(x_r)); white-box attackers must land
    inside B_eps(x_o) (preemptive paper, Definitions 2-3).
    """

    kind = "preemptive"
    threats = ("grey-box", "white-box")
    default_threat = "grey-box"
    norm: str = "linf"
    delta: float = 0.0
    label: str = "pred"  # "pred": robustify towards c(x_o) (no ground truth needed); "true": the ground truth

    def robustify(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, model, x, y):
        return self.robustify(model, x, y if self.label == "true" else None)

    def reconstruct(self, model: nn.Module, x_seen: torch.Tensor, eps: float) -> torch.Tensor:
        """x_hat_o from x_r, knowing this defense and its hyper-parameters (each preemptive defense says how)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how a white-box attacker reconstructs x_o")

    @staticmethod
    @torch.no_grad()
    def target(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The label robustification keeps: ``y`` when given, else the prediction c(x_o)."""
        return model(x).argmax(1) if y is None else y


class Preprocessor(Kind, nn.Module):
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


class Wrapper(Kind, Randomized):
    """Replaces the classifier's decision rule (randomized smoothing): ``classify`` may abstain (-1)."""

    kind = "wrapper"
    threats = ("oblivious", "white-box")


def soft_log_prob(base: nn.Module, x: torch.Tensor, sigma: float, m: int, z: torch.Tensor | None = None) -> torch.Tensor:
    """log G(x), G(x) = E_eta[softmax(f(x + eta))], estimated by the mean over ``m`` draws (Salman et al. 2019).

    ``z``: standard normal draws of shape (m, *x.shape) to use instead of fresh ones (SmoothAdv's fixed noise);
    the noise is ``sigma * z``.  The mean is taken in log space (logsumexp of the log-softmaxes minus log m),
    which equals log(mean softmax) without the 1e-20 clamp of Salman et al.'s code.  The output is a
    normalised log-probability vector, so it is usable as logits: cross-entropy on it is -log G(x)_y.
    """
    if z is None:
        z = torch.randn((m, *x.shape), device=x.device, dtype=x.dtype)
    m = z.shape[0]
    noisy = (x.unsqueeze(0) + sigma * z).reshape(m * x.shape[0], *x.shape[1:])
    logp = F.log_softmax(base(noisy), dim=1).view(m, x.shape[0], -1)
    return torch.logsumexp(logp, dim=0) - math.log(m)


class SoftSmoothed(nn.Module):
    """The soft smoothed classifier G of ``base`` (Salman et al. 2019; preemptive paper eq. 3), as a module.

    ``forward(x)`` returns log G(x) estimated with ``m`` fresh noise draws per call (log-probabilities that
    serve as logits).  The white-box surface of a smoothing ``Wrapper``: attacks that want their own sampling
    scheme (``pgd_smooth``) recognise it by its type and read ``base`` and ``sigma`` from it.
    """

    def __init__(self, base: nn.Module, sigma: float, m: int):
        super().__init__()
        self.base, self.sigma, self.m = base, float(sigma), int(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_log_prob(self.base, x, self.sigma, self.m)


class Detector(Kind):
    """Scores inputs beside the classifier and rejects some: ``score`` is higher for in-distribution inputs."""

    kind = "detector"
    threats = ("oblivious", "white-box")
    rejects = True

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def surrogate_score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A differentiable stand-in for ``score``: what an adaptive attack differentiates.  ``model`` here and in
        ``attack_parts`` is the bare classifier (adaptive attacks receive it as ``classifier=``), never a surface."""
        raise NotImplementedError

    def attack_parts(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(logits the defense decides on, surrogate score) in one differentiable pass, for a defense that can share
        the work (MagNet: ae(x) once); None: an attack computes the two apart."""
        return None
