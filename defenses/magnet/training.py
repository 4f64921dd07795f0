"""Training, caching and loading MagNet's autoencoder (``defenses.magnet``): the denoising objective as the purifier
method ``magnet`` (``defenses.purifiers.training``), ``train_autoencoder``, the shipped digest (``SHIPPED``) and
``load_or_train_autoencoder``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.artifacts import TRAIN_THREADS
from harness.core.artifacts import cache_key as artifact_key
from harness.core.artifacts import load_or_train as load_artifact
from harness.data import load
from harness.models.checkpoint import load_checkpoint

from ..purifiers.training import Context, Method, frozen_eval, register_method, train_purifier
from .autoencoder import DEFAULTS, PAPER, MagNetAutoencoder


def _craft(ctx: Context, x_in: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The denoising input clip(x + noise * N(0, I), 0, 1) (MagNet: v_noise = 0.1 on MNIST); labels unused."""
    return (x + ctx.cfg["noise"] * torch.randn_like(x)).clamp(0, 1)


def _loss(ctx: Context, x_noisy: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """MSE(ae(x_noisy), x) (MagNet's ``mean_squared_error``; the slide writes the mean of ||x - ae(x)||_2)."""
    mse = F.mse_loss(ctx.net(x_noisy), x)
    return mse, {"mse": mse.detach()}


METHOD = register_method(Method(
    "magnet", build=lambda c, cfg: MagNetAutoencoder(c, cfg["structure"], cfg["activation"]), defaults=DEFAULTS,
    paper=PAPER, craft=_craft, loss=_loss), __name__)


class NoTarget(nn.Module):
    """MagNet's autoencoder is trained without the classifier; ``train_purifier`` only reads its target's device."""

    def __init__(self, device):
        super().__init__()
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)


def train_autoencoder(data, epochs: int | None = None, *, log: list | None = None, device: str | torch.device = "cpu",
                      **settings) -> nn.Module:
    """Train MagNet's autoencoder on ``data`` (an ImageSet or (x, y); labels unused): Adam on MSE(ae(x~), x) with
    x~ = clip(x + noise N(0, I), 0, 1), the purifier loop of ``defenses.purifiers.training`` (one thread on the CPU,
    seeded by ``seed``: bit-reproducible; the caller's RNG is left as it was).  ``settings`` override ``DEFAULTS``;
    ``log`` receives the mean MSE per epoch; a tqdm bar shows unless ``--quiet`` (``harness.core.progress``).  Returns
    the network in eval mode."""
    return train_purifier("magnet", NoTarget(device), data, epochs, log=log, **settings)


# The sha256 of each shipped autoencoder (artifact name -> digest; ``harness/weights/<name>.pt``): the digits
# autoencoder of docs/results/magnet.md (default settings), trained with torch 2.13.0 on one CPU thread.
SHIPPED: dict[str, str] = {
    "magnet-ae-digits-edfd946e63f8": "4305d1e60c7b3585370269e97ae20f14099b0698e81aab43e999948df3517742",
}


def cache_key(cfg: dict, dataset: str) -> str:
    return artifact_key({"method": "magnet", "cfg": cfg, "dataset": dataset, "threads": TRAIN_THREADS})


def load_or_train_autoencoder(cfg: dict | None = None, *, dataset: str = "digits", checkpoint: str | None = None,
                              data_dir: str | None = None) -> tuple[nn.Module, str]:
    """The autoencoder: from ``checkpoint`` (a state dict, ``weights_only``), else from the cache
    (``$HARNESS_CACHE``, keyed by the settings, the dataset and the torch version) or shipped (``SHIPPED``), else trained
    now on the training split of ``dataset`` and cached (atomic write).  Returns (network in eval mode without
    parameter gradients, where its weights came from).  The global RNG is left as it was."""

    cfg = {**DEFAULTS, **(cfg or {})}
    with torch.random.fork_rng(devices=[]):
        if checkpoint is not None:

            channels = load(dataset, "test", data_dir).x.shape[1]
            net = load_checkpoint(MagNetAutoencoder(channels, cfg["structure"], cfg["activation"]), checkpoint,
                                  f"magnet autoencoder (structure={cfg['structure']})")
            source = str(checkpoint)
        else:
            artifact = f"magnet-ae-{dataset}-{cache_key(cfg, dataset)}"
            data = load(dataset, "train", data_dir)
            net = MagNetAutoencoder(data.x.shape[1], cfg["structure"], cfg["activation"])
            state, source = load_artifact(artifact, lambda: train_autoencoder(data, **cfg).state_dict(),
                                          sha256=SHIPPED.get(artifact))
            net.load_state_dict(state)
    return frozen_eval(net), source
