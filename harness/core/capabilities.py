"""The optional capabilities of a defense, as ``typing.Protocol``s a class declares where it is defined, by naming them
among its bases: ``class DefenseGAN(Preprocessor, Randomized, Approximates, TrainsAlone)``.

The engine and the attacks ask ``declares(defense, Capability)``: a check of what the class says of itself (its
bases), never a probe of its attributes, so a method a class happens to have grants nothing.  A static type
checker reads the same Protocols structurally.  Imports nothing of the project.

| capability | the class provides | who asks |
|---|---|---|
| ``Reconstructs`` | ``reconstruct(model, x_seen, eps)``: a white-box attacker's x_hat_o (preemptive paper, Algorithm 3) | the adaptive attacks |
| ``Randomized`` | a ``classify`` (``purify``) that draws noise | the verdict (``--passes``), BPDA, EOT, the adaptive attacks |
| ``Approximates`` | ``approx(x)``: a differentiable g ~ P for BPDA's backward pass (Athalye et al. 2018, sec. 4.1) | BPDA |
| ``Certifies`` | Cohen et al.'s CERTIFY: ``certify(model, x, n0, n, alpha, batch)`` | ``harness certify`` |
| ``TrainsAlone`` | ``train_to_file``: what it learns from clean data alone | ``harness train --defense NAME`` |
| ``TrainsForTarget`` | ``train_for_target``: what it learns for a classifier | ``harness train --defense NAME --target-model M`` |
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the registry imports this module before torch is needed (a misspelt name costs no torch)
    import torch
    from torch import nn


class Reconstructs(Protocol):
    def reconstruct(self, model: nn.Module, x_seen: torch.Tensor, eps: float) -> torch.Tensor:
        """x_hat_o, the original image a white-box attacker recovers from what it is handed (x_r)."""
        ...


class Randomized(Protocol):
    """Each ``classify`` (and ``purify``) draws fresh noise: a verdict takes ``--passes`` classifications, and
    gradient attacks run every step (one noisy pass that fools the defense is no success)."""


class Approximates(Protocol):
    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable g(x) ~ P(x) whose gradient BPDA uses in place of P's."""
        ...


class Certifies(Protocol):
    def certify(self, model: nn.Module, x: torch.Tensor, n0: int | None = None, n: int | None = None,
                alpha: float | None = None, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, certified L2 radius) per image, (-1, 0) for an abstention (Cohen et al. 2019, CERTIFY)."""
        ...


class TrainsAlone(Protocol):
    @classmethod
    def train_to_file(cls, out: str | Path, *, dataset: str, split: str | None, data_dir: str | None,
                      epochs: int | None, seed: int, device: Any, settings: dict[str, str]) -> str:
        """Train and save at ``out`` what the defense learns; returns the ``--set`` that makes a run use the file."""
        ...


class TrainsForTarget(Protocol):
    @classmethod
    def train_for_target(cls, name: str, out: str | Path, *, target: str | None, arch: str | None, dataset: str,
                         split: str | None, data_dir: str | None, epochs: int | None, device: Any,
                         settings: dict[str, str], load_target: Callable[..., tuple[nn.Module, str]]) -> str:
        """Train what the defense learns for the classifier ``target`` and save it at ``out``; returns the
        ``harness run`` arguments that use the file."""
        ...


def declares(thing: object, capability: type) -> bool:
    """Whether ``thing`` (a class or an instance) names ``capability`` among its bases."""
    cls = thing if isinstance(thing, type) else type(thing)
    return capability in cls.__mro__
