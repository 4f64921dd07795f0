"""The attack interface (AutoAttack's style: one class per attack, one ``perturb`` entry) and norm helpers."""
from __future__ import annotations

from typing import ClassVar

import torch

from harness.errors import UsageError

NORMS = ("linf", "l2")


class Attack:
    """An attack with a fixed budget: ``perturb(model, x, y)`` returns adversarial images in [0, 1].

    ``model`` maps [0, 1] images to logits.  Adaptive attacks (``adaptive = True``) also receive the defense
    they attack as ``perturb(model, x, y, defense=...)``.  ``norm``/``eps`` give the budget around the
    point the attack is handed; ``threat`` is the threat model the attack asks for (None: the defense
    kind's default, see ``harness.threat``).
    """

    norms: ClassVar[tuple[str, ...]] = NORMS
    adaptive: ClassVar[bool] = False
    norm: str = "linf"
    eps: float = 0.0
    threat: str | None = None

    def set_budget(self, norm: str, eps: float) -> None:
        norm = norm.lower()
        if norm not in self.norms:
            raise UsageError(f"{type(self).__name__} supports norms {', '.join(self.norms)}, not {norm!r}")
        if not eps >= 0:
            raise UsageError(f"eps must be >= 0, got {eps}")
        self.norm, self.eps = norm, float(eps)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """The attack's resolved parameters (they go in run.json and the config hash)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and _plain(v)}


def _plain(v) -> bool:
    return isinstance(v, (int, float, str, bool, type(None))) or (
        isinstance(v, (tuple, list)) and all(isinstance(i, (int, float, str, bool)) for i in v))


def flat_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations."""
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(p=2, dim=1)


def project(x_adv: torch.Tensor, center: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project onto B_eps(center) intersected with [0, 1]; ``eps`` may be a per-sample tensor."""
    d = x_adv - center
    eps_b = eps.view(-1, *[1] * (d.dim() - 1)) if torch.is_tensor(eps) else eps
    if norm == "linf":
        d = torch.maximum(torch.minimum(d, eps_b), -eps_b) if torch.is_tensor(eps) else d.clamp(-eps, eps)
    else:
        n = flat_norm(d, "l2").view(-1, *[1] * (d.dim() - 1))
        d = d * torch.clamp(eps_b / (n + 1e-12), max=1.0)
    return (center + d).clamp(0.0, 1.0)


def ascent_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent step of unit size for ``norm``: sign(g) for Linf, g/||g||_2 for L2."""
    if norm == "linf":
        return g.sign()
    n = flat_norm(g, "l2").view(-1, *[1] * (g.dim() - 1))
    return g / (n + 1e-12)


def random_in_ball(like: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """A sample from the uniform distribution on the eps-ball (eta ~ U(B_eps(0)) in the papers).

    Linf: U(-eps, eps) per coordinate.  L2: a Gaussian direction scaled to radius eps * U^(1/d), the exact
    uniform law on the d-dimensional ball.  Draws from the global generator (seeded per cell by the engine).
    """
    eps_b = eps.view(-1, *[1] * (like.dim() - 1)) if torch.is_tensor(eps) else eps
    if norm == "linf":
        return (torch.rand_like(like) * 2 - 1) * eps_b
    d = like[0].numel()
    g = torch.randn_like(like)
    g = g / (flat_norm(g, "l2").view(-1, *[1] * (like.dim() - 1)) + 1e-12)
    r = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / d)
    return g * r.view(-1, *[1] * (like.dim() - 1)) * eps_b
