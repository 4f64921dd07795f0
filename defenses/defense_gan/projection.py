"""The projection P(x) = G(z*(x)) of Defense-GAN (``defenses.defense_gan``; paper eq. 8 by Algorithm 1): z* by L
steps of gradient descent on ||G(z) - x||_2^2 from R random starts, and its reconstruction error."""
from __future__ import annotations

import torch
from torch import nn


def reconstruct(g: nn.Module, x: torch.Tensor, L: int, R: int, step_size: float,
                z0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z*(x) = argmin_z ||G(z) - x||_2^2 (Defense-GAN eq. 8; slide "Defense-GAN") by L steps of gradient descent
    z <- z - step_size * grad_z ||G(z) - x||_2^2 from R starts z_0 ~ N(0, I) (drawn from the global generator as
    one (R, N, d) tensor, unless ``z0`` gives them), keeping per sample the start whose final error is smallest
    (paper Algorithm 1 / Figure 1).  Each sample's error depends on its own z only (G in eval mode), so the batch
    is one sum.  Returns (G(z*) detached, z* (N, d), the squared errors ||G(z*) - x||^2 (N,)); no graph to ``x``."""
    x = x.detach()
    n, d = len(x), g.latent_dim
    z = torch.randn(R, n, d, device=x.device, dtype=x.dtype) if z0 is None else z0.to(x.device, x.dtype)
    z = z.reshape(R * n, d)
    target = x.unsqueeze(0).expand(R, *x.shape).reshape(R * n, *x.shape[1:])
    with torch.enable_grad():
        for _ in range(L):
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(((g(z) - target) ** 2).sum(), z)
            z = z.detach() - step_size * grad
    with torch.no_grad():
        out = g(z)
        err = ((out - target) ** 2).flatten(1).sum(1).view(R, n)
        best = err.argmin(0)
        pick = best * n + torch.arange(n, device=x.device)
        return out[pick], z[pick], err.gather(0, best[None])[0]


def reconstruction_error(g: nn.Module, x: torch.Tensor, L: int, R: int, step_size: float) -> torch.Tensor:
    """Per-pixel mean squared error ||G(z*(x)) - x||_2^2 / dim of the projection (Defense-GAN eq. 8's objective at
    the found z*), per image."""
    return reconstruct(g, x, L, R, step_size)[2] / x[0].numel()
