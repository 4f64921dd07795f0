"""The torchattacks adapter (``ta.<Class>``; ``attacks.adapters``): ``cls(model, eps=eps, **params)``."""
from __future__ import annotations

import contextlib
import inspect
import io

import torch

from harness.core.attack import NO_CONTEXT, AttackContext
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.geometry import NORMS

from ..autoattack import AA_NORMS, draw_seed
from .library import TA_EPS_NAMES, TA_L2, TA_LINF, LibraryAttack, _device, _Forward, _num_classes


class TorchattacksAttack(LibraryAttack):
    """A torchattacks attack: ``TorchattacksAttack("PGD", steps=20, alpha=0.025)``; the budget comes with each call."""

    library = "torchattacks"
    prefix = "ta."

    @classmethod
    def class_norms(cls, peer) -> tuple[str, ...]:
        params = inspect.signature(peer.__init__).parameters
        name = peer.__name__
        if "norm" in params:
            return NORMS
        if name in TA_LINF:
            return ("linf",)
        if name in TA_L2:
            return ("l2",)
        if any(e in params for e in TA_EPS_NAMES):
            return ("l2",) if "L2" in name else ("linf",)
        return NORMS

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        x, y = x.detach(), y.detach()
        if len(x) == 0:
            return x.clone()
        device = _device(model, x)
        module = _Forward(model)
        sig = inspect.signature(self._cls.__init__).parameters
        kwargs = dict(self.params)
        for e in TA_EPS_NAMES:
            if e in sig:
                kwargs[e] = budget.eps
        if "norm" in sig:
            kwargs["norm"] = AA_NORMS[budget.norm]
        if "n_classes" in sig and kwargs.get("n_classes") is None:
            kwargs["n_classes"] = _num_classes(model, x.to(device))
        if "seed" in sig and kwargs.get("seed") is None:
            kwargs["seed"] = draw_seed()
        with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device": _Forward has no parameters
            try:
                atk = self._cls(module, **kwargs)
            except TypeError as err:
                raise UsageError(f"ta.{self.name}: {err}") from None
        atk.set_device(device)  # torchattacks moves the images there and returns them there
        if self.targeted:
            if "targeted" not in atk.supported_mode:
                raise UsageError(f"ta.{self.name} has no targeted mode")
            if self.target == "least":
                atk.set_mode_targeted_least_likely(quiet=True)
            else:
                atk.set_mode_targeted_random(quiet=True)
        return self.finish(atk(x.to(device), y.to(device)), x, budget)
