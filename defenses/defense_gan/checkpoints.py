"""Defense-GAN's trained generator on disk (``defenses.defense_gan``): ``save_generator``, the cache key, the shipped
digests (``SHIPPED``) and ``load_or_train_generator`` (a checkpoint, the cache, or trained now)."""
from __future__ import annotations

import math

import torch

from harness.core.artifacts import TRAIN_THREADS, atomic_save, safe_load
from harness.core.artifacts import cache_key as artifact_key
from harness.core.artifacts import load_or_train as load_artifact
from harness.core.errors import UsageError
from harness.data import load

from .networks import Generator
from .training import TRAIN_SPLIT, _frozen, resolve_settings, train_generator


def _arch(cfg: dict) -> dict:
    """The arguments of ``Generator`` (Defense-GAN's G, Sec. 3.1) among ``cfg``."""
    return {k: int(cfg[k]) for k in ("latent_dim", "channels", "image_size", "width")}


def cache_key(cfg: dict, dataset: str, split: str) -> str:
    """The artifact key of a trained generator: method, WGAN-GP settings, dataset, split, training threads."""
    return artifact_key({"method": "defense_gan", "cfg": cfg, "dataset": dataset, "split": split,
                         "threads": TRAIN_THREADS})


def _checkpoint_state(g: Generator, cfg: dict, dataset: str, split: str) -> dict:
    """What ``save_generator`` writes: G's weights (Defense-GAN Sec. 3.1) and its architecture, dataset, split."""
    return {"generator": g.state_dict(), "config": {**_arch({**cfg, "channels": g.channels, "image_size": g.image_size}),
                                                     "dataset": dataset, "split": split}}


def save_generator(out_path, *, dataset: str = "digits", split: str | None = None, data_dir: str | None = None,
                   epochs: int | None = None, device: str | torch.device = "cpu", **settings) -> dict:
    """Train Defense-GAN's generator (``train_generator``: WGAN-GP, Gulrajani et al. 2017, Algorithm 1, on the clean
    ``split`` of ``dataset``; Defense-GAN paper Sec. 3.1) and write {"generator": state dict, "config": architecture,
    dataset, split} to ``out_path`` (atomic), for ``--set defense_gan.checkpoint=PATH``.  ``epochs``: critic passes
    over the split, converted to generator iterations ceil(epochs * n / (batch_size * critic_iters)); ``settings``
    override ``TRAIN_DEFAULTS`` (``iters`` among them; give one of ``epochs``, ``iters``).  Returns the config."""
    split = split or TRAIN_SPLIT.get(dataset, "train")
    data = load(dataset, split, data_dir)
    if epochs is not None:
        if "iters" in settings:
            raise UsageError("defense_gan: give epochs or iters, not both")
        if int(epochs) <= 0:
            raise UsageError(f"defense_gan: epochs must be positive, got {epochs}")
        cfg = resolve_settings(dataset, **settings)
        settings["iters"] = math.ceil(int(epochs) * len(data) / (cfg["batch_size"] * cfg["critic_iters"]))
    cfg = resolve_settings(dataset, **settings)
    g = train_generator(data, dataset=dataset, device=device, **cfg)
    state = _checkpoint_state(g.cpu(), cfg, dataset, split)
    atomic_save(state, out_path)
    return state["config"]


# The sha256 of each shipped generator (artifact name -> digest; ``harness/weights/<name>.pt``): the digits and MNIST
# generators of the default settings (MNIST's on test-train), trained with torch 2.13.0 on one CPU thread.
SHIPPED: dict[str, str] = {
    "defense-gan-digits-723613ecee22": "e2104406c1dea1c37d655af6926d60e3d3cc0517e5c466a023228e58016fc278",
    "defense-gan-mnist-24176e32d60f": "a1ac7397c5433424063157f7666c6cdb6d2948689f9f5be0c1af7f00066dd704",
}


def load_or_train_generator(cfg: dict | None = None, *, dataset: str = "digits", checkpoint: str | None = None,
                            data_dir: str | None = None) -> tuple[Generator, str]:
    """Defense-GAN's G (paper Sec. 3.1): from ``checkpoint`` (written by ``save_generator``, or a bare state dict of a
    generator with ``cfg``'s architecture; read with ``weights_only=True``), else from the cache or trained now on
    the training split of ``dataset`` (``train_generator``) and cached (``load_or_train``).  Returns (G in eval mode
    without parameter gradients, where its weights came from).  The global RNG is left as it was."""
    probe = load(dataset, "test", data_dir).x
    channels, size = probe.shape[1], probe.shape[-1]
    with torch.random.fork_rng(devices=[]):
        if checkpoint is not None:
            try:
                state = safe_load(checkpoint)
            except FileNotFoundError:
                raise UsageError(f"defense_gan: checkpoint {checkpoint} does not exist") from None
            except Exception as e:  # noqa: BLE001 - a file that is no weights file is a usage error
                raise UsageError(f"defense_gan: cannot read checkpoint {checkpoint} as weights "
                                 f"({(str(e).splitlines() or [type(e).__name__])[0]})") from None
            if isinstance(state, dict) and "generator" in state:
                arch, sd = dict(state.get("config", {})), state["generator"]
            else:
                arch, sd = {}, state
            arch = {**resolve_settings(dataset, **(cfg or {})), "channels": channels, "image_size": size,
                    **{k: v for k, v in arch.items() if k in ("latent_dim", "channels", "image_size", "width")}}
            if (arch["channels"], arch["image_size"]) != (channels, size):
                raise UsageError(f"defense_gan: checkpoint {checkpoint} generates {arch['channels']}x"
                                 f"{arch['image_size']}x{arch['image_size']} images, {dataset} has {channels}x{size}x{size}")
            g = Generator(**_arch(arch))
            try:
                g.load_state_dict(sd)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise UsageError(f"defense_gan: checkpoint {checkpoint} does not fit the generator "
                                 f"{_arch(arch)}: {str(e).splitlines()[0]}") from None
            source = str(checkpoint)
        else:
            full = resolve_settings(dataset, **(cfg or {}))
            split = TRAIN_SPLIT.get(dataset, "train")
            name = f"defense-gan-{dataset}-{cache_key(full, dataset, split)}"

            def train() -> dict:
                return train_generator(load(dataset, split, data_dir), dataset=dataset, **full).state_dict()

            sd, source = load_artifact(name, train, sha256=SHIPPED.get(name))
            g = Generator(full["latent_dim"], channels, size, full["width"])
            g.load_state_dict(sd)
    return _frozen(g), source
