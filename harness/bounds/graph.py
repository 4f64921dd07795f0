"""Turn an ``nn.Module`` into the flat list of layers that bound propagation walks (``layers.py``).

Conversion rules (``from_module``), applied recursively with the module's dotted path for error messages:

* ``nn.Sequential``: its children in order (nested Sequentials are flattened);
* a module whose children are exactly ``features`` and ``classifier`` (the project's ``SmallCNN``):
  ``features`` then ``classifier`` - its ``forward`` is assumed to be ``classifier(features(x))``;
* a module with a ``normalize`` method and ``mean``/``std`` tensors (the project's ``Normalized``, matched by
  duck typing): the per-channel affine ``(x - mean) / std`` first, then its body by the two rules above (a
  module with no children is the normalisation alone); ``from_module(model, normalize=(mean, std))``
  prepends the same layer for a model that normalises in some other way;
* ``nn.Linear``; ``nn.Conv2d`` (zero padding, numeric ``padding``); ``nn.BatchNorm1d``/``nn.BatchNorm2d``
  in eval mode with running statistics (an affine layer); ``nn.AvgPool2d`` (no ceil mode, padding counted
  in the divisor); ``nn.MaxPool2d`` (no ceil mode, no indices); ``nn.ReLU``; ``nn.Flatten()`` (from dim 1);
* ``nn.Identity`` and ``nn.Dropout`` are dropped (the bounds are those of the deterministic eval network).

Anything else raises ``TypeError`` naming the layer.  The model is re-read at every bound computation
(cheap), so conversion sees the current weights and ``eval()``/``train()`` state.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from harness.core.wrapper import ModelWrapper

from .layers import (
    AvgPool,
    ChannelAffine,
    Conv,
    Dense,
    Flatten,
    Layer,
    MaxPool,
    ReLU,
    batchnorm_coefficients,
    normalize_coefficients,
)

Normalization = tuple[Sequence[float] | torch.Tensor, Sequence[float] | torch.Tensor]


class Graph:
    """A network as a flat sequence of supported layers, ``layers[0]`` applied first."""

    def __init__(self, layers: Sequence[Layer]):
        self.layers = tuple(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (equal to the source module's, which tests check)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def shapes(self, x: torch.Tensor) -> list[torch.Size]:
        """Per-sample input shape of every layer, then the output shape (from one sample of ``x``)."""
        shapes = [x.shape[1:]]
        with torch.no_grad():
            z = x[:1]
            for layer in self.layers:
                z = layer.forward(z)
                shapes.append(z.shape[1:])
        return shapes

    def affine_tail_start(self) -> int:
        """Index where the trailing run of affine layers starts (``len(self)`` if the last layer is nonlinear)."""
        start = len(self.layers)
        while start > 0 and not self.layers[start - 1].nonlinear:
            start -= 1
        return start


def is_normalizer(module: nn.Module) -> bool:
    """Duck-typed ``harness.models.normalize.Normalized``: a ``normalize`` method and ``mean``/``std`` tensors."""
    return (callable(getattr(module, "normalize", None)) and isinstance(getattr(module, "mean", None), torch.Tensor)
            and isinstance(getattr(module, "std", None), torch.Tensor))


def unsupported(module: nn.Module, name: str, why: str = "") -> TypeError:
    where = f"'{name}' " if name else ""
    return TypeError(f"harness.bounds cannot bound layer {where}({type(module).__name__}){': ' + why if why else ''}; "
                     "supported: Linear, Conv2d, BatchNorm1d/2d (eval), AvgPool2d, MaxPool2d, ReLU, Flatten, "
                     "Identity, Dropout, Sequential, and modules made of `features` + `classifier`")


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def convert_conv(module: nn.Conv2d, name: str) -> list[Layer]:
    if module.padding_mode != "zeros":
        raise unsupported(module, name, f"padding_mode={module.padding_mode!r} (only zero padding)")
    if isinstance(module.padding, str):
        raise unsupported(module, name, f"padding={module.padding!r} (give the padding as numbers)")
    return [Conv(module, name)]


def convert_batchnorm(module: nn.modules.batchnorm._BatchNorm, name: str) -> list[Layer]:
    if module.training or module.running_mean is None:
        raise unsupported(module, name, "only eval-mode BatchNorm with running statistics is an affine layer "
                                        "(call model.eval())")
    return [ChannelAffine(batchnorm_coefficients(module), name)]


def nonzero(value: int | tuple[int, ...]) -> bool:
    return any(v != 0 for v in ((value,) if isinstance(value, int) else value))


def convert_avgpool(module: nn.AvgPool2d, name: str) -> list[Layer]:
    if module.ceil_mode or (not module.count_include_pad and nonzero(module.padding)):
        raise unsupported(module, name, "ceil_mode or padding excluded from the divisor")
    return [AvgPool(module, name)]


def convert_maxpool(module: nn.MaxPool2d, name: str) -> list[Layer]:
    if module.ceil_mode or module.return_indices:
        raise unsupported(module, name, "ceil_mode or return_indices")
    return [MaxPool(module, name)]


def convert_flatten(module: nn.Flatten, name: str) -> list[Layer]:
    if module.start_dim != 1 or module.end_dim != -1:
        raise unsupported(module, name, f"Flatten({module.start_dim}, {module.end_dim}) (only Flatten(1, -1))")
    return [Flatten(name)]


LEAVES: tuple[tuple[type, Callable[[nn.Module, str], list[Layer]]], ...] = (
    (nn.Linear, lambda m, name: [Dense(m, name)]),
    (nn.Conv2d, convert_conv),
    (nn.BatchNorm1d, convert_batchnorm),
    (nn.BatchNorm2d, convert_batchnorm),
    (nn.AvgPool2d, convert_avgpool),
    (nn.MaxPool2d, convert_maxpool),
    (nn.ReLU, lambda m, name: [ReLU(name)]),
    (nn.Flatten, convert_flatten),
    (nn.Identity, lambda m, name: []),
    (nn.Dropout, lambda m, name: []),
)


def convert_body(module: nn.Module, name: str) -> list[Layer]:
    """A container: a Sequential, or exactly ``features`` + ``classifier``."""
    if isinstance(module, nn.Sequential):
        return [layer for child_name, child in module.named_children() for layer in convert(child, join(name, child_name))]
    if isinstance(module, ModelWrapper):  # bookkeeping around the model (the engine's pass counter): look through it
        return convert(module.model, join(name, "model"))
    children = dict(module.named_children())
    if not children:
        raise unsupported(module, name)
    if set(children) == {"features", "classifier"}:
        return (convert(children["features"], join(name, "features"))
                + convert(children["classifier"], join(name, "classifier")))
    raise unsupported(module, name, f"a custom module with children {sorted(children)} (only a Sequential or "
                                    "exactly `features` + `classifier` can be read without running its forward)")


def convert(module: nn.Module, name: str) -> list[Layer]:
    """The layers of ``module`` (see the module docstring for the rules).  Leaves match by exact type: a
    subclass may have changed ``forward``."""
    if is_normalizer(module):
        layer = ChannelAffine(normalize_coefficients(lambda: module.mean, lambda: module.std), join(name, "normalize"))
        return [layer] + (convert_body(module, name) if next(module.children(), None) is not None else [])
    for kind, make in LEAVES:
        if type(module) is kind:
            return make(module, name)
    return convert_body(module, name)


def from_module(model: nn.Module | Graph, normalize: Normalization | None = None) -> Graph:
    """The flat layer list of ``model``; ``normalize=(mean, std)`` prepends ``(x - mean) / std`` per channel."""
    if isinstance(model, Graph):
        return model if normalize is None else Graph([normalization_layer(normalize)] + list(model.layers))
    layers = convert(model, "")
    if normalize is not None:
        layers.insert(0, normalization_layer(normalize))
    return Graph(layers)


def normalization_layer(normalize: Normalization) -> ChannelAffine:
    mean, std = (torch.as_tensor(v, dtype=torch.float64) for v in normalize)
    if (std <= 0).any():
        raise ValueError(f"std must be positive, got {std.flatten().tolist()}")
    return ChannelAffine(normalize_coefficients(lambda: mean, lambda: std), "normalize")
