"""Ball geometry of the threat models: per-sample norms, projection onto B_eps(c) ∩ [0,1], steepest-ascent steps
and uniform samples of the ball.  Attacks, defenses and the engine all use it; it imports nothing of the project."""
from __future__ import annotations

import torch

NORMS = ("linf", "l2")


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
