"""BPDA: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018, Sec. 4.1).

Against a preprocessor P that is non-differentiable or gives useless gradients, run a gradient attack on
model ∘ BPDA(P), where BPDA(P) computes P(x) on the forward pass and, on the backward pass, replaces
dP/dx by the derivative of a differentiable g with g(x) ≈ P(x):

    ∇_x L(f(P(x)))  ≈  ∇_z L(f(z))|_{z = P(x)} · ∇_x g(x)

``backward="identity"``: g(x) = x, so the gradient is the classifier's gradient taken at P(x) (the
obfuscated-gradients code: ``model.defend`` forward, the gradient applied straight to the input).
``backward="approx"``: g is the defense's own differentiable surrogate ``defense.approx(x)``.
(advertorch's ``BPDAWrapper`` with ``forwardsub``, docs/REFERENCE-IMPLEMENTATIONS.md 7.)

Randomized preprocessors: each forward pass is a fresh draw; averaging over draws is EOT
(``attacks/eot.py``), not this module.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from harness.core.attack import NO_CONTEXT, Attack, AttackContext
from harness.core.budget import Budget
from harness.core.capabilities import Approximates, Randomized, declares
from harness.core.defense import Preprocessor
from harness.core.errors import UsageError
from harness.core.registry import ATTACKS, Part


class _BPDAFunction(torch.autograd.Function):
    """forward: P(x) (no graph recorded); backward: identity, or the vector-Jacobian product of g at x."""

    @staticmethod
    def forward(ctx, x, forward_fn, backward_fn):
        out = forward_fn(x)
        if backward_fn is None and out.shape != x.shape:
            raise UsageError(f"BPDA with an identity backward needs P(x) shaped like x: {tuple(x.shape)} -> "
                             f"{tuple(out.shape)}; supply approx(x)")
        ctx.backward_fn = backward_fn
        if backward_fn is not None:
            ctx.save_for_backward(x)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.backward_fn is None:
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.backward_fn(xd), xd, grad_out)
        return g, None, None


class BPDAWrapper(nn.Module):
    """An nn.Module computing ``forward_fn(x)`` whose backward pass is the identity or that of ``backward_fn``."""

    def __init__(self, forward_fn: Callable[[torch.Tensor], torch.Tensor],
                 backward_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.forward_fn, self.backward_fn = forward_fn, backward_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BPDAFunction.apply(x, self.forward_fn, self.backward_fn)


def bpda_surface(defense, classifier: nn.Module, backward: str = "identity") -> nn.Module:
    """classifier ∘ BPDA(P) for a preprocessor defense; the bare classifier for a defense without ``purify``."""
    if not isinstance(defense, Preprocessor):
        return classifier
    purify = defense.purify
    if backward == "identity":
        back = None
    elif backward == "approx":
        if not declares(defense, Approximates):
            raise UsageError(f"bpda backward=approx: the {type(defense).__name__} defense supplies no approx(x); "
                             "use backward=identity")
        back = defense.approx
    else:
        raise UsageError(f"bpda backward must be identity or approx, got {backward!r}")
    return nn.Sequential(BPDAWrapper(purify, back), classifier)


@ATTACKS.register("bpda", "BPDA (Athalye et al. 2018): a gradient attack (inner: pgd) through P with P's backward replaced by identity|approx")
class BPDA(Attack):
    """BPDA (Athalye et al. 2018): a gradient attack (inner: pgd) through P with P's backward replaced by identity|approx.

    ``inner``: a part, any registered non-adaptive attack, given this attack's budget; by default PGD with 40 steps
    of eps/4 (the 40-step PGD of JATP's evaluation).  Its parameters are reached by path
    (``--set bpda.inner.steps=100``); another attack by name (``--set bpda.inner=ta.CW --set bpda.inner.c=10``: the
    C&W form ||x' - x||^2 + c L(f(P(x'))) of the Defense-GAN slides' objective (1)).  Adaptive: it receives the
    defense and the bare classifier (``AttackContext``); the budget of each call goes to the inner attack.
    """

    adaptive = True
    gradients = "approximated"  # harness.flags: the backward pass is replaced (bpda-eot-stronger)

    def __init__(self, inner: Part = Part("attacks", "pgd", steps=40),
                 backward: Literal["identity", "approx"] = "identity"):
        if backward not in ("identity", "approx"):
            raise UsageError(f"bpda backward must be identity or approx, got {backward!r}")
        built = inner.build() if isinstance(inner, Part) else inner  # a Part: the inner attack's name and keywords
        if isinstance(built, BPDA):
            raise UsageError("bpda cannot wrap itself")
        if built.adaptive:
            raise UsageError(f"bpda needs a plain gradient attack as inner, and {type(built).__name__} is adaptive")
        self.inner, self.backward = built, backward
        # Against a randomized P one lucky draw is no success: the inner attack then takes all its steps (the same
        # part built again with early_stop=False; an inner attack handed over built is used as it is).
        stops = isinstance(inner, Part) and inner.takes("early_stop") and built.early_stop
        self._inner_randomized = inner.build(early_stop=False) if stops else built
        self.norms = built.norms

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        """Run ``inner`` on classifier ∘ BPDA(P); ``model`` (the white-box surface) is used without a preprocessor.
        Against a randomized defense the inner attack runs without early stopping (every sample takes every step)."""
        defense, classifier = context.defense, context.classifier
        surface = bpda_surface(defense, classifier, self.backward) if classifier is not None and defense is not None \
            else model
        inner = self._inner_randomized if declares(defense, Randomized) else self.inner
        return inner.perturb(surface, x, y, budget)
