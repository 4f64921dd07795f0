"""The layers the bound engine understands, each with its exact forward map and, for the affine ones, the
two other maps bound propagation needs: the interval image in centre/radius form (IBP) and the transpose
(the CROWN backward pass).

Affine layers (``Dense``, ``Conv`` and ``AvgPool`` (both ``Convolution``), ``ChannelAffine``, ``Flatten``) offer

* ``forward(x)``: the layer itself, ``x`` of shape (B, *in_shape);
* ``interval(mu, r)``: the image of the box ``mu ± r``, ``(W mu + b, |W| r)`` (Gowal et al. 2018, eq. 6);
* ``backward(A, in_shape)``: for linear functionals ``A`` of the output, shape (B, m, *out_shape), the
  functionals ``A W`` of the input, shape (B, m, *in_shape), and the constant ``A b``, shape (B, m) (or
  ``None`` when the layer has no offset): one step of the backward recursion of CROWN (Zhang et al. 2018,
  Theorem 3.2), with convolutions transposed by ``conv_transpose2d`` (never unrolled into matrices).

``Dense`` and ``Convolution`` also give ``l2_radius(r)``: for the set ``{c + r * d : ||d||_2 <= 1}`` the exact
half-width ``||W_i * r||_2`` of each output ``i`` (the first affine layer of IBP on an L2 ball).
``ChannelAffine`` and ``Flatten`` are *diagonal* (each output depends on one input): they map that set onto
a set of the same form.  ``ReLU`` and ``MaxPool`` are the two nonlinear layers; their interval images are
monotone (Gowal et al. 2018, eq. 7) and their linear relaxations live in ``backward.py``.

Every layer reads its weights from the ``nn.Module`` it wraps at call time, so bounds are differentiable
with respect to the model parameters (and ``torch.func.functional_call`` works through them).
"""
from __future__ import annotations

import abc
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Pair = tuple[int, int]
Coefficients = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # like -> (scale, shift), each (C,)


def pair(value: int | tuple[int, ...]) -> Pair:
    """``value`` as an (height, width) pair, the way ``nn.Conv2d`` and the pooling layers accept it."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` for ``v >= 0`` with a finite gradient at 0 (the value grows by at most sqrt(tiny))."""
    return v.clamp_min(torch.finfo(v.dtype).tiny).sqrt()


class Dense:
    """``nn.Linear``: ``x W^T + b``."""

    nonlinear, diagonal = False, False

    def __init__(self, module: nn.Linear, name: str):
        self.module, self.name = module, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.module.weight, self.module.bias)

    def interval(self, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(mu), F.linear(r, self.module.weight.abs())

    def l2_radius(self, r: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(F.linear(r.square(), self.module.weight.square()))

    def backward(self, A: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = self.module.bias
        return A @ self.module.weight, None if bias is None else A @ bias


class Convolution(abc.ABC):
    """A 2-d convolution with zero padding; subclasses say where the kernel, offset and groups come from."""

    nonlinear, diagonal = False, False

    def __init__(self, name: str, stride: Pair, padding: Pair, dilation: Pair):
        self.name, self.stride, self.padding, self.dilation = name, stride, padding, dilation

    @abc.abstractmethod
    def weight(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        """The kernel, (C_out, C_in / groups, kh, kw), for ``channels`` input channels."""

    @abc.abstractmethod
    def bias(self) -> torch.Tensor | None:
        """The per-channel offset, or ``None``."""

    @abc.abstractmethod
    def groups(self, channels: int) -> int:
        """The number of groups for ``channels`` input channels."""

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups(x.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight(x.shape[1], x), self.bias())

    def interval(self, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.weight(mu.shape[1], mu)
        return self.conv(mu, weight, self.bias()), self.conv(r, weight.abs(), None)

    def l2_radius(self, r: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(self.conv(r.square(), self.weight(r.shape[1], r).square(), None))

    def output_padding(self, in_shape: torch.Size, out_shape: torch.Size, weight: torch.Tensor) -> Pair:
        """What ``conv_transpose2d`` needs to give back the input size (lost by the floor in the stride)."""
        return tuple(  # type: ignore[return-value]
            in_shape[1 + i] - ((out_shape[1 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                               + self.dilation[i] * (weight.shape[2 + i] - 1) + 1)
            for i in range(2))

    def backward(self, A: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, m, out_shape = A.shape[0], A.shape[1], A.shape[2:]
        weight = self.weight(in_shape[0], A)
        At = F.conv_transpose2d(A.reshape(batch * m, *out_shape), weight, None, self.stride, self.padding,
                                self.output_padding(in_shape, out_shape, weight), self.groups(in_shape[0]),
                                self.dilation)
        bias = self.bias()
        return At.view(batch, m, *in_shape), None if bias is None else A.sum((-2, -1)) @ bias


class Conv(Convolution):
    """``nn.Conv2d`` with zero padding (any stride, padding, dilation and groups)."""

    def __init__(self, module: nn.Conv2d, name: str):
        super().__init__(name, pair(module.stride), pair(module.padding), pair(module.dilation))
        self.module = module

    def weight(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        return self.module.weight

    def bias(self) -> torch.Tensor | None:
        return self.module.bias

    def groups(self, channels: int) -> int:
        return self.module.groups


class AvgPool(Convolution):
    """``nn.AvgPool2d`` (no ceil mode; zero padding counted in the divisor) as the depthwise convolution with
    the constant kernel ``1 / divisor`` that it is."""

    def __init__(self, module: nn.AvgPool2d, name: str):
        super().__init__(name, pair(module.stride), pair(module.padding), (1, 1))
        self.kernel = pair(module.kernel_size)
        self.divisor = module.divisor_override or self.kernel[0] * self.kernel[1]

    def weight(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_full((channels, 1, *self.kernel), 1.0 / self.divisor)

    def bias(self) -> None:
        return None

    def groups(self, channels: int) -> int:
        return channels


class ChannelAffine:
    """``x * scale_c + shift_c`` per channel (dimension 1): BatchNorm in eval mode and the in-model input
    normalisation ``(x - mean) / std``.  ``coefficients(like)`` gives (scale, shift), each of shape (C,)."""

    nonlinear, diagonal = False, True

    def __init__(self, coefficients: Coefficients, name: str):
        self.coefficients, self.name = coefficients, name

    def channelwise(self, like: torch.Tensor, feature_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) shaped (C, 1, ..., 1) to broadcast over features with ``feature_dims`` dimensions."""
        shape = (-1,) + (1,) * (feature_dims - 1)
        scale, shift = self.coefficients(like)
        return scale.reshape(shape), shift.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.channelwise(x, x.dim() - 1)
        return x * scale + shift

    def interval(self, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.channelwise(mu, mu.dim() - 1)
        return mu * scale + shift, r * scale.abs()

    def backward(self, A: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.channelwise(A, len(in_shape))
        return A * scale, (A * shift).flatten(2).sum(-1)


def batchnorm_coefficients(bn: nn.modules.batchnorm._BatchNorm) -> Coefficients:
    """Eval-mode BatchNorm as ``scale * x + shift``: ``scale = gamma / sqrt(var + eps)``,
    ``shift = beta - mean * scale``."""

    def coefficients(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        return scale, shift if bn.bias is None else shift + bn.bias

    return coefficients


def normalize_coefficients(mean: Callable[[], torch.Tensor], std: Callable[[], torch.Tensor]) -> Coefficients:
    """``(x - mean) / std`` as ``scale * x + shift``; ``mean()``/``std()`` give the constants at call time."""

    def coefficients(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.as_tensor(mean(), dtype=like.dtype, device=like.device).flatten()
        s = torch.as_tensor(std(), dtype=like.dtype, device=like.device).flatten()
        return 1.0 / s, -m / s

    return coefficients


class Flatten:
    """``nn.Flatten()``: (B, *shape) -> (B, prod(shape))."""

    nonlinear, diagonal = False, True

    def __init__(self, name: str):
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def interval(self, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mu.flatten(1), r.flatten(1)

    def backward(self, A: torch.Tensor, in_shape: torch.Size) -> tuple[torch.Tensor, None]:
        return A.reshape(*A.shape[:2], *in_shape), None


class ReLU:
    """``nn.ReLU``; monotone, so its interval image is ``[relu(l), relu(u)]`` (Gowal et al. 2018, eq. 7)."""

    nonlinear, diagonal = True, False

    def __init__(self, name: str):
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def interval(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(lower), F.relu(upper)


class MaxPool:
    """``nn.MaxPool2d`` (no ceil mode); monotone in every input, so its interval image is
    ``[maxpool(l), maxpool(u)]`` (Gowal et al. 2018, eq. 7)."""

    nonlinear, diagonal = True, False

    def __init__(self, module: nn.MaxPool2d, name: str):
        self.name = name
        self.kernel = pair(module.kernel_size)
        self.stride, self.padding = pair(module.stride), pair(module.padding)
        self.dilation = pair(module.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation)

    def interval(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(lower), self.forward(upper)


Layer = Dense | Convolution | ChannelAffine | Flatten | ReLU | MaxPool
