"""Input sets and the minimum of a linear function over them ("concretisation").

Both sets are ``{centre + radius * d}`` (elementwise product) with ``d`` in a unit ball: ``Box`` for the
Linf ball (the interval ``[centre - radius, centre + radius]``), ``Ellipsoid`` for the L2 ball (an L2 ball
of radius eps is the ``Ellipsoid`` with ``radius = eps`` everywhere; an axis-aligned scaling of it, such as
the input normalisation, stays an ``Ellipsoid``).  Tensors have a leading batch dimension; every sample
has its own set.

``lower(A, bias)`` is ``min_x A x + bias`` over the set for functionals ``A`` of shape (B, m, *shape), or
(1, m, *shape) for functionals shared by all samples:

* Box: ``A centre - |A| radius + bias``, which is ``A+ lower + A- upper + bias``;
* Ellipsoid: ``A centre - ||A * radius||_2 + bias`` (Hoelder's inequality with the dual norm of L2, as in
  the closed-form bounds of CROWN, Zhang et al. 2018, Corollary 3.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def dot(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample, the product of each of the m functionals in ``A`` (B, m, *shape) with ``x`` (B, *shape);
    ``A`` of batch size 1 is shared by all samples (one matrix product, nothing expanded)."""
    if A.shape[0] == 1:
        return x.flatten(1) @ A[0].flatten(1).T
    return (A.flatten(2) @ x.flatten(1).unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class Box:
    """The interval ``[centre - radius, centre + radius]`` (``radius >= 0``)."""

    centre: torch.Tensor
    radius: torch.Tensor

    @staticmethod
    def from_bounds(lower: torch.Tensor, upper: torch.Tensor) -> Box:
        return Box((upper + lower) / 2, (upper - lower) / 2)

    @property
    def lower_bound(self) -> torch.Tensor:
        return self.centre - self.radius

    @property
    def upper_bound(self) -> torch.Tensor:
        return self.centre + self.radius

    def bounding_box(self) -> Box:
        return self

    def lower(self, A: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        value = dot(A, self.centre) - dot(A.abs(), self.radius)
        return value if bias is None else value + bias


@dataclass(frozen=True)
class Ellipsoid:
    """``{centre + radius * d : ||d||_2 <= 1}`` (``radius >= 0``, per element)."""

    centre: torch.Tensor
    radius: torch.Tensor

    def bounding_box(self) -> Box:
        """The smallest box around the set: each coordinate moves by at most its radius."""
        return Box(self.centre, self.radius)

    def lower(self, A: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        value = dot(A, self.centre) - torch.linalg.vector_norm((A * self.radius.unsqueeze(1)).flatten(2), dim=-1)
        return value if bias is None else value + bias


InputSet = Box | Ellipsoid


def per_sample(eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``eps`` (a number or one value per sample) broadcastable against ``x`` (B, *shape)."""
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    return eps.reshape(-1, *([1] * (x.dim() - 1))) if eps.dim() else eps


def linf_ball(x: torch.Tensor, eps: float | torch.Tensor) -> Box:
    """The Linf ball of radius ``eps`` around ``x`` intersected with the image range [0, 1]."""
    e = per_sample(eps, x)
    return Box.from_bounds((x - e).clamp(0, 1), (x + e).clamp(0, 1))


def l2_ball(x: torch.Tensor, eps: float | torch.Tensor) -> Ellipsoid:
    """The L2 ball of radius ``eps`` around ``x``, *not* intersected with [0, 1] (a superset of the threat
    model's set, so the bounds stay sound, only possibly looser)."""
    return Ellipsoid(x, per_sample(eps, x).expand_as(x))
