"""Training Defense-GAN's generator (``defenses.defense_gan``) with WGAN-GP (Gulrajani et al., "Improved Training
of Wasserstein GANs", NeurIPS 2017, Algorithm 1): the settings per dataset and ``train_generator``."""
from __future__ import annotations

import torch
from torch import nn

from harness.core.artifacts import TRAIN_THREADS, torch_threads
from harness.core.errors import UsageError
from harness.core.progress import bar
from harness.core.resume import Epochs

from .networks import Critic, Generator

# Training settings per dataset (quick, CPU).  digits: about 60 s on one thread.  MNIST: trained on ``test-train``
# (the MNIST training images are not in /work/shared/data); 28x28 costs about 7x digits per iteration (0.42 s
# measured on one shared CPU thread), so 2000 iterations take about 15 minutes (much less on a GPU: ``device``).
TRAIN_DEFAULTS: dict[str, dict] = {
    "digits": {"latent_dim": 16, "width": 32, "iters": 1000, "batch_size": 64, "critic_iters": 5, "gp_lambda": 10.0,
               "lr": 5e-4, "beta1": 0.5, "beta2": 0.9, "seed": 0},
    "mnist": {"latent_dim": 64, "width": 32, "iters": 2000, "batch_size": 64, "critic_iters": 5, "gp_lambda": 10.0,
              "lr": 2e-4, "beta1": 0.5, "beta2": 0.9, "seed": 0},
}
TRAIN_SPLIT = {"mnist": "test-train"}  # default "train"
CHECKPOINT_EVERY = 100  # generator iterations between checkpoints (a few seconds of digits training)

# The official MNIST training settings (models/gan.py, experiments/cfgs/gans/mnist.yml).  Documented, not run.
PAPER_TRAINING = {"mode": "wgan-gp", "latent_dim": 128, "iters": 30000, "batch_size": 32, "critic_iters": 5,
                  "gp_lambda": 10.0, "lr": 1e-4, "beta1": 0.5, "beta2": 0.9}


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x_hat D(x_hat)||_2 - 1)^2], x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1] per sample
    (Gulrajani et al. 2017, Algorithm 1, lines 4-7, the penalty term of eq. 3)."""
    a = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def resolve_settings(dataset: str, **settings) -> dict:
    """The training settings: ``TRAIN_DEFAULTS`` of ``dataset`` (digits' for any other) overridden by ``settings``;
    unknown names are a UsageError (WGAN-GP, Gulrajani et al. 2017, Algorithm 1's hyper-parameters)."""
    cfg = dict(TRAIN_DEFAULTS.get(dataset, TRAIN_DEFAULTS["digits"]))
    unknown = sorted(set(settings) - set(cfg))
    if unknown:
        raise UsageError(f"defense_gan: unknown training settings {', '.join(unknown)}; known: {', '.join(cfg)}")
    cfg.update({k: v for k, v in settings.items() if v is not None})
    try:  # values may come as strings (``--set iters=2000``)
        for k in ("latent_dim", "width", "iters", "batch_size", "critic_iters", "seed"):
            v = float(cfg[k])
            if v != int(v):
                raise ValueError(k)
            cfg[k] = int(v)
        for k in ("gp_lambda", "lr", "beta1", "beta2"):
            cfg[k] = float(cfg[k])
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"defense_gan: training setting {k} must be a number (an integer where it counts), "
                         f"got {cfg[k]!r}") from None
    if min(cfg["latent_dim"], cfg["width"], cfg["iters"], cfg["batch_size"], cfg["critic_iters"]) < 1 or not cfg["lr"] > 0:
        raise UsageError(f"defense_gan: latent_dim, width, iters, batch_size, critic_iters and lr must be positive: {cfg}")
    return cfg


def train_generator(data, iters: int | None = None, *, dataset: str = "digits", log: list | None = None,
                    device: str | torch.device = "cpu", **settings) -> Generator:
    """Train Defense-GAN's generator on the clean images of ``data`` (an ImageSet, an (x, y) pair or an image tensor;
    labels unused) with WGAN-GP (Gulrajani et al. 2017, Algorithm 1: ``critic_iters`` critic steps on
    D(fake) - D(real) + lambda * GP per generator step on -D(G(z)), z ~ N(0, I), Adam).  Defense-GAN paper Sec. 3.1:
    "G trained on unperturbed training samples".  Settings: ``TRAIN_DEFAULTS[dataset]`` overridden by ``settings``
    (``iters``: generator iterations).  One thread, seeded by ``seed``: reproducible on a machine; the caller's RNG
    and thread count are left as they were.  ``log`` receives (iteration, critic loss, -W estimate) every 100
    iterations.  Inside a training session (``harness.core.resume``) G, D, both optimisers and the RNG are
    checkpointed every ``CHECKPOINT_EVERY`` generator iterations.  Returns G in eval mode without parameter
    gradients."""
    cfg = resolve_settings(dataset, **({"iters": iters} if iters is not None else {}), **settings)
    x = data.x if hasattr(data, "x") else (data[0] if isinstance(data, (tuple, list)) else data)
    x = x.to(device)
    c, s = x.shape[1], x.shape[-1]
    if x.shape[-2] != s:
        raise UsageError(f"defense_gan: square images only, got {tuple(x.shape[1:])}")
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch_threads(TRAIN_THREADS):
        torch.manual_seed(cfg["seed"])
        g = Generator(cfg["latent_dim"], c, s, cfg["width"]).to(device)
        d = Critic(c, s, cfg["width"]).to(device)
        betas = (cfg["beta1"], cfg["beta2"])
        opt_g = torch.optim.Adam(g.parameters(), cfg["lr"], betas=betas)
        opt_d = torch.optim.Adam(d.parameters(), cfg["lr"], betas=betas)
        bs, n = cfg["batch_size"], len(x)
        run = Epochs(cfg["iters"], {"generator": g, "critic": d, "opt_g": opt_g, "opt_d": opt_d}, log=log,
                     every=CHECKPOINT_EVERY)
        with bar(cfg["iters"], "defense_gan: WGAN-GP", initial=run.start) as pbar:
            for it in run:
                for _ in range(cfg["critic_iters"]):
                    real = x[torch.randint(0, n, (bs,), device=device)]
                    with torch.no_grad():
                        fake = g(torch.randn(bs, cfg["latent_dim"], device=device))
                    w_est = d(real).mean() - d(fake).mean()  # the critic's Wasserstein estimate
                    loss_d = -w_est + cfg["gp_lambda"] * gradient_penalty(d, real, fake)
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                loss_g = -d(g(torch.randn(bs, cfg["latent_dim"], device=device))).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                if log is not None and (it % 100 == 0 or it == cfg["iters"] - 1):
                    log.append((it, float(loss_d), float(w_est)))
                pbar.update()
    return _frozen(g)


def _frozen(net: nn.Module) -> nn.Module:
    """G fixed after training (Defense-GAN Sec. 3.2: only z is optimised at inference): eval mode, no gradients."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
