"""A trained purifier as a defense (``defenses.purifiers.training``): ``PurifierDefense`` (classify = model(P(x))),
with the digest of its weights (``weights_digest``, in run.json) and ``frozen_eval``."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from harness.core.defense import Preprocessor


def weights_digest(net: nn.Module) -> str:
    """First 12 hex digits of SHA-256 over the state dict's names, shapes and bytes (goes in run.json)."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


def frozen_eval(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with no parameter gradients: a trained preprocessor as the defenses use it."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class PurifierDefense(Preprocessor):
    """A trained purifier P in front of the fixed classifier: classify = model(P(x)), P(x) clamped to [0, 1].

    ``describe()`` gives the settings and a digest of the weights, so run.json and the config hash pin
    the exact purifier.  ``dynamic`` (NRP's dynamic inference): P(clip_[0,1](Proj_{Linf dyn_eps}(x + N(0,
    dyn_sigma^2)))) - a random preprocessor (``randomized``), to be attacked with EOT.
    """

    trains_for_target = True  # harness train --defense NAME --target-model M (defenses.purifiers.training.train_to_file)
    receives = ("dataset", "data_dir", "quiet", "target")  # the run's (harness.core.defense.RunContext)

    def __init__(self, name: str, net: nn.Module, params: dict, source: str = "",
                 dynamic: bool = False, dyn_sigma: float = 0.05, dyn_eps: float = 16 / 255):
        super().__init__()
        self.net = net
        self._name, self._source = name, source
        self.dynamic, self.dyn_sigma, self.dyn_eps = bool(dynamic), float(dyn_sigma), float(dyn_eps)
        self.randomized = self.dynamic
        self._params = {**params, "weights": weights_digest(net)}
        if self.dynamic:
            self._params.update(dynamic=True, dyn_sigma=self.dyn_sigma, dyn_eps=self.dyn_eps)
        self.eval()

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            noise = (torch.randn_like(x) * self.dyn_sigma).clamp(-self.dyn_eps, self.dyn_eps)
            x = (x + noise).clamp(0, 1)
        return self.net(x).clamp(0, 1)

    has_approx = True

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """BPDA's differentiable surrogate (``bpda --set backward=approx``): the network without the clamp.

        The clamp to [0, 1] has a zero gradient wherever P's raw output leaves the box (about half the
        pixels of the digits' black background); the surrogate passes the gradient straight through it.
        """
        return self.net(x)

    def describe(self) -> dict:
        return dict(self._params)

    def extra_repr(self) -> str:
        return f"{self._name}, weights from {self._source}"
