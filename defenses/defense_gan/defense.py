"""The registered ``defense_gan`` (``defenses.defense_gan``): a randomized preprocessor purify(x) = G(z*(x)), with
BPDA's identity surrogate, and ``harness train --defense defense_gan``."""
from __future__ import annotations

import math

import torch

from harness.core.capabilities import Approximates, Randomized, TrainsAlone
from harness.core.defense import Preprocessor
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES

from ..purifiers.training import weights_digest
from .checkpoints import load_or_train_generator, save_generator
from .projection import reconstruct
from .training import resolve_settings

# The defense's quick defaults and the paper's values (``harness list`` shows both).
QUICK = {"L": 50, "R": 5, "step_size": 0.1}
PAPER = {"L": "200", "R": "10", "step_size": "0.01 (on the sum of squares; official code: rec_lr 10 on the "
                                             "per-pixel mean, momentum 0.7)"}

BATCH = 256  # images reconstructed at once (times R latent codes)
MAX_L, MAX_R = 100_000, 1000


def _check_range(L, R, step_size) -> tuple[int, int, float]:
    """Validate Defense-GAN's L (GD steps), R (random restarts), eta (step size) (paper Algorithm 1)."""

    def as_int(v, name, lo, hi):
        try:
            ok = float(v) == int(float(v)) and not isinstance(v, bool)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok or not lo <= int(float(v)) <= hi:
            raise UsageError(f"defense_gan: {name} must be an integer in {lo}..{hi}, got {v!r}")
        return int(float(v))

    L, R = as_int(L, "L", 0, MAX_L), as_int(R, "R", 1, MAX_R)
    try:
        eta = float(step_size)
    except (TypeError, ValueError):
        eta = float("nan")
    if not (math.isfinite(eta) and 0 < eta <= 100):
        raise UsageError(f"defense_gan: step_size must be in (0, 100], got {step_size!r}")
    return L, R, eta


@DEFENSES.register("defense_gan", "Defense-GAN (Samangouei et al. 2018): P(x) = G(z*), z* by L GD steps on "
                                  "||G(z) - x||^2 from R random starts; WGAN-GP generator (break it with bpda)",
                   paper=PAPER)
class DefenseGAN(Preprocessor, Randomized, Approximates, TrainsAlone):
    """Defense-GAN (Samangouei et al. 2018, Sec. 3.2, Algorithm 1): purify(x) = G(z*(x)), z* by ``L`` steps of
    gradient descent of size ``step_size`` on ||G(z) - x||_2^2 from ``R`` random starts, the best per sample.
    The generator: ``checkpoint`` (``save_generator``), else trained on first use on ``dataset`` (WGAN-GP,
    ``train_iters``, ``train_seed``) and cached.  Randomized (fresh starts per call, from the global generator,
    which the engine seeds per cell).  Quick defaults L=50, R=5, step_size=0.1; the paper's L=200, R=10 (module
    docstring for the step size)."""

    receives = ("dataset", "data_dir")  # the run's (harness.core.defense.RunContext)

    @classmethod
    def train_to_file(cls, out, *, dataset, split, data_dir, epochs, seed, device, settings) -> str:
        """``harness train --defense defense_gan --out G.pt [--set iters=N]``: ``save_generator``."""
        save_generator(out, dataset=dataset, split=split, data_dir=data_dir, epochs=epochs, device=device,
                       **{"seed": seed, **settings})
        return f"defense_gan.checkpoint={out}"

    def __init__(self, L: int = QUICK["L"], R: int = QUICK["R"], step_size: float = QUICK["step_size"],
                 dataset: str = "digits", checkpoint: str | None = None, train_iters: int | None = None,
                 train_seed: int = 0, data_dir: str | None = None):
        super().__init__()
        self.L, self.R, self.step_size = _check_range(L, R, step_size)
        self.dataset, self.checkpoint = dataset, checkpoint
        cfg = {"seed": int(train_seed), **({} if train_iters is None else {"iters": int(train_iters)})}
        self.G, self._source = load_or_train_generator(cfg, dataset=dataset, checkpoint=checkpoint, data_dir=data_dir)
        self._params = {"L": self.L, "R": self.R, "step_size": self.step_size, "dataset": dataset,
                        "checkpoint": checkpoint, **({} if checkpoint else resolve_settings(dataset, **cfg)),
                        "weights": weights_digest(self.G)}
        self.eval()

    def train(self, mode: bool = True):
        """Keep G in eval mode (its batch norm uses the running statistics: samples stay independent)."""
        super().train(mode)
        self.G.eval()
        return self

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """P(x) = G(z*(x)) (Defense-GAN Sec. 3.2, eq. 8 by Algorithm 1; ``reconstruct``), in chunks of ``BATCH``
        images, shape and [0, 1] kept.  z* is not differentiated: the output's gradient w.r.t. x is zero (the
        slide: the projection "is non-differentiable"), which BPDA's identity backward replaces."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.G.channels, self.G.image_size, self.G.image_size):
            raise UsageError(f"defense_gan: the generator makes {self.G.channels}x{self.G.image_size}x"
                             f"{self.G.image_size} images, got input of shape {tuple(x.shape)}")
        xc = x.detach().clamp(0, 1)
        parts = [reconstruct(self.G, xc[i:i + BATCH], self.L, self.R, self.step_size)[0]
                 for i in range(0, len(xc), BATCH)]
        out = torch.cat(parts) if parts else xc.clone()
        out = out.clamp(0, 1).to(x.dtype)
        return out + 0 * x if x.requires_grad else out

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """BPDA's surrogate: the identity, G(z*(x)) ~ x by the definition of z* (slide "Breaking preprocessing-based
        defenses": d/dx G(z*(x)) ~ d/dx x; Athalye et al. 2018, Sec. 5.4.1)."""
        return x

    def describe(self) -> dict:
        return dict(self._params)

    def extra_repr(self) -> str:
        return f"L={self.L}, R={self.R}, step_size={self.step_size}, weights from {self._source}"
