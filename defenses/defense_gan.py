"""Defense-GAN (Samangouei, Kabkab & Chellappa, "Defense-GAN: Protecting Classifiers Against Adversarial Attacks Using
Generative Models", ICLR 2018), and how BPDA breaks it (Athalye, Carlini & Wagner, ICML 2018, Sec. 5.4.1).

Lecture slides "Defense-GAN" (seed ``lecture-defenses-against-adversarial-attacks.md``):

* a generator G is trained on clean (unperturbed) training images only; here with WGAN-GP (Gulrajani et al.,
  "Improved Training of Wasserstein GANs", NeurIPS 2017, Algorithm 1), the official code's MNIST mode ``wgan-gp``;
* the classifier sees P(x) = G(z*(x)) with

      z*(x) = argmin_z ||G(z) - x||_2^2                                         (slide "Defense-GAN"; paper eq. 8)

  approximated by L steps of gradient descent z <- z - eta * grad_z ||G(z) - x||_2^2 from R random starts
  z_0 ~ N(0, I) (G's prior), keeping per sample the start with the smallest final error (paper Sec. 3.2,
  Figure 1 and Algorithm 1; slide: "L steps of gradient descent and R random re-initializations").
* "BPDA breaks it" (slide "Breaking preprocessing-based defenses"): z* is not differentiated (the slide:
  "non-differentiable"), so a plain gradient attack through P sees a zero gradient; BPDA (``attacks.bpda``) runs
  the forward pass through G(z*(.)) and replaces it by the identity on the backward pass (``approx(x) = x``).
  Measured on digits (``scripts/defense_gan_table.py``, 200 test images, ``digits_cnn``): plain white-box FGSM/PGD
  through P do nothing (zero gradient); BPDA-PGD brings the paper setting (L = 200, R = 10) from 72.5% (oblivious
  FGSM) to 67.5% at eps 0.1 and from 34.5% to 21.5% at eps 0.2 - below the oblivious attack, but not far below:
  on 8x8 digits the reconstruction is imperfect (the identity a rough backward) and oblivious FGSM already hurts.
  P is randomized: an attack that stops a sample on the first draw that fools it (the registered ``bpda``'s inner
  PGD has ``early_stop`` on) is judged on a fresh draw, so use ``early_stop=False`` or the engine's ``--passes``.

Settings.  ``L``, ``R`` and the step size eta are the defense's parameters.  The paper's (and the official code's,
github.com/kabkabm/defensegan ``experiments/cfgs/gans/mnist.yml``) MNIST setting is L = 200, R = 10.  The step size
here is on the slide's objective, the SUM of squares ||G(z) - x||_2^2: the brief's paper value 0.01 is that of the
official code expressed on this scale (it minimises the per-pixel MEAN with rec_lr = 10, i.e. 10/784 = 0.013 on the
sum for 28x28 images, with momentum 0.7 and the rate divided by 10 after 80% of the steps - plain gradient descent
here, as the slides).  The quick CPU default (digits, 8x8 = 64 pixels) is L = 50, R = 5, eta = 0.1: on 200 digits
test images the reconstruction then reaches a per-pixel MSE of about 0.01 and the standard classifier ``digits_cnn``
keeps 94% (its own clean accuracy: 94.5%); eta = 0.01 is too small for 64 pixels at L = 200, R = 10 (MSE 0.015,
90.5%).  Table and BPDA results: ``scripts/defense_gan_table.py``.

Generator and critic (``Generator``, ``Critic``): DCGAN-style, small, for 8x8 (digits) and 28x28 (MNIST) images:
G: z (``latent_dim``) -> linear -> (2w, s/4, s/4) -> 2x [transposed conv 4x4 stride 2] -> sigmoid image, batch norm
and ReLU in between (the official ``mnist_generator``: linear, two deconvolutions, batch norm, sigmoid output);
critic: 2x [conv 4x4 stride 2, leaky ReLU 0.2] -> linear, no batch norm (WGAN-GP: the penalty is per sample).
Training (``train_generator``): WGAN-GP's Algorithm 1, lambda = 10, n_critic = 5, Adam beta = (0.5, 0.9) (the
paper's and the official code's values); on digits 1000 generator iterations of batch 64 at lr 5e-4 (the official
code: 30,000 iterations at lr 1e-4, batch 32; ``PAPER_TRAINING``), about a minute on one CPU thread.  The generator
is trained on first use, seeded, on one thread, and cached through ``harness.core.artifacts.load_or_train`` keyed by
its settings and the dataset (and split); ``checkpoint`` loads a saved one (``save_generator``) with
``weights_only=True``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from harness.core.artifacts import TRAIN_THREADS, atomic_save, safe_load, torch_threads
from harness.core.artifacts import cache_key as artifact_key
from harness.core.artifacts import load_or_train as load_artifact
from harness.core.defense import Preprocessor
from harness.core.errors import UsageError
from harness.core.progress import bar
from harness.core.registry import DEFENSES
from harness.data import load

from .purifiers.training import weights_digest

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

# The official MNIST training settings (models/gan.py, experiments/cfgs/gans/mnist.yml).  Documented, not run.
PAPER_TRAINING = {"mode": "wgan-gp", "latent_dim": 128, "iters": 30000, "batch_size": 32, "critic_iters": 5,
                  "gp_lambda": 10.0, "lr": 1e-4, "beta1": 0.5, "beta2": 0.9}

# The defense's quick defaults and the paper's values (``harness list`` shows both).
QUICK = {"L": 50, "R": 5, "step_size": 0.1}
PAPER = {"L": "200", "R": "10", "step_size": "0.01 (on the sum of squares; official code: rec_lr 10 on the "
                                             "per-pixel mean, momentum 0.7)"}

BATCH = 256  # images reconstructed at once (times R latent codes)
MAX_L, MAX_R = 100_000, 1000


# --------------------------------------------------------------------------------------------------------------
# Generator and critic
# --------------------------------------------------------------------------------------------------------------


def _base(image_size: int) -> int:
    """S/4, the side of G's first feature map (two stride-2 upsamplings; official ``mnist_generator``: 7 for 28)."""
    if image_size % 4 or image_size < 4:
        raise UsageError(f"defense_gan: the generator needs an image size divisible by 4, got {image_size}")
    return image_size // 4


class Generator(nn.Module):
    """G: R^latent_dim -> [0, 1]^(C x S x S), the generator of Defense-GAN (paper Sec. 3.1; official
    ``mnist_generator``): linear to (2w, S/4, S/4), two 4x4 stride-2 transposed convolutions, sigmoid output."""

    def __init__(self, latent_dim: int = 16, channels: int = 1, image_size: int = 8, width: int = 32):
        super().__init__()
        self.latent_dim, self.channels, self.image_size, self.width = int(latent_dim), int(channels), int(image_size), int(width)
        b, w = _base(image_size), self.width
        self.fc = nn.Sequential(nn.Linear(self.latent_dim, 2 * w * b * b), nn.BatchNorm1d(2 * w * b * b), nn.ReLU())
        self.net = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
                                 nn.ConvTranspose2d(w, channels, 4, 2, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = self.image_size // 4
        return self.net(self.fc(z).view(-1, 2 * self.width, b, b))


class Critic(nn.Module):
    """The WGAN-GP critic D: [0, 1]^(C x S x S) -> R (Gulrajani et al. 2017, Sec. 4: no batch norm in the critic):
    two 4x4 stride-2 convolutions with leaky ReLU, then linear."""

    def __init__(self, channels: int = 1, image_size: int = 8, width: int = 32):
        super().__init__()
        b, w = _base(image_size), int(width)
        self.net = nn.Sequential(nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Flatten(), nn.Linear(2 * w * b * b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


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


def train_generator(data, iters: int | None = None, *, dataset: str = "digits", quiet: bool = True,
                    log: list | None = None, device: str | torch.device = "cpu", **settings) -> Generator:
    """Train Defense-GAN's generator on the clean images of ``data`` (an ImageSet, an (x, y) pair or an image tensor;
    labels unused) with WGAN-GP (Gulrajani et al. 2017, Algorithm 1: ``critic_iters`` critic steps on
    D(fake) - D(real) + lambda * GP per generator step on -D(G(z)), z ~ N(0, I), Adam).  Defense-GAN paper Sec. 3.1:
    "G trained on unperturbed training samples".  Settings: ``TRAIN_DEFAULTS[dataset]`` overridden by ``settings``
    (``iters``: generator iterations).  One thread, seeded by ``seed``: reproducible on a machine; the caller's RNG
    and thread count are left as they were.  ``log`` receives (iteration, critic loss, -W estimate) every 100
    iterations.  Returns G in eval mode without parameter gradients."""
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
        with (_nullbar() if quiet else bar(cfg["iters"], "defense_gan: WGAN-GP")) as pbar:
            for it in range(cfg["iters"]):
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


class _nullbar:
    """A silent stand-in for the progress bar of ``train_generator`` (no equation)."""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def update(self, *a):
        pass


def _frozen(net: nn.Module) -> nn.Module:
    """G fixed after training (Defense-GAN Sec. 3.2: only z is optimised at inference): eval mode, no gradients."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


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
                   epochs: int | None = None, quiet: bool = True, device: str | torch.device = "cpu",
                   **settings) -> dict:
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
    g = train_generator(data, dataset=dataset, quiet=quiet, device=device, **cfg)
    state = _checkpoint_state(g.cpu(), cfg, dataset, split)
    atomic_save(state, out_path)
    return state["config"]


# The sha256 of each shipped generator (artifact name -> digest; ``harness/weights/<name>.pt``): the digits generator
# of the default settings, trained with torch 2.13.0 on one CPU thread.  MNIST's trains on first use.
SHIPPED: dict[str, str] = {
    "defense-gan-digits-723613ecee22": "e2104406c1dea1c37d655af6926d60e3d3cc0517e5c466a023228e58016fc278",
}


def load_or_train_generator(cfg: dict | None = None, *, dataset: str = "digits", checkpoint: str | None = None,
                            data_dir: str | None = None, quiet: bool = True) -> tuple[Generator, str]:
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
                return train_generator(load(dataset, split, data_dir), dataset=dataset, quiet=quiet, **full).state_dict()

            sd, source = load_artifact(name, train, sha256=SHIPPED.get(name))
            g = Generator(full["latent_dim"], channels, size, full["width"])
            g.load_state_dict(sd)
    return _frozen(g), source


# --------------------------------------------------------------------------------------------------------------
# The projection P(x) = G(z*(x))
# --------------------------------------------------------------------------------------------------------------


def reconstruct(g: nn.Module, x: torch.Tensor, L: int, R: int, step_size: float,
                z0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z*(x) = argmin_z ||G(z) - x||_2^2 (Defense-GAN eq. 8; slide "Defense-GAN") by L steps of gradient descent
    z <- z - step_size * grad_z ||G(z) - x||_2^2 from R starts z_0 ~ N(0, I) (drawn from the global generator as
    one (R, N, d) tensor, unless ``z0`` gives them), keeping per sample the start whose final error is smallest
    (paper Algorithm 1 / Figure 1).  Each sample's error depends on its own z only (G in eval mode), so the batch
    is one sum.  Returns (G(z*) detached, z* (N, d), the squared errors ||G(z*) - x||^2 (N,)); no graph to ``x``."""
    x = x.detach()
    n, d = len(x), g.latent_dim
    z = torch.randn(R, n, d, device=x.device, dtype=x.dtype) if z0 is None else z0.to(x.device, x.dtype)
    z = z.reshape(R * n, d)
    target = x.unsqueeze(0).expand(R, *x.shape).reshape(R * n, *x.shape[1:])
    with torch.enable_grad():
        for _ in range(L):
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(((g(z) - target) ** 2).sum(), z)
            z = z.detach() - step_size * grad
    with torch.no_grad():
        out = g(z)
        err = ((out - target) ** 2).flatten(1).sum(1).view(R, n)
        best = err.argmin(0)
        pick = best * n + torch.arange(n, device=x.device)
        return out[pick], z[pick], err.gather(0, best[None])[0]


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
class DefenseGAN(Preprocessor):
    """Defense-GAN (Samangouei et al. 2018, Sec. 3.2, Algorithm 1): purify(x) = G(z*(x)), z* by ``L`` steps of
    gradient descent of size ``step_size`` on ||G(z) - x||_2^2 from ``R`` random starts, the best per sample.
    The generator: ``checkpoint`` (``save_generator``), else trained on first use on ``dataset`` (WGAN-GP,
    ``train_iters``, ``train_seed``) and cached.  Randomized (fresh starts per call, from the global generator,
    which the engine seeds per cell).  Quick defaults L=50, R=5, step_size=0.1; the paper's L=200, R=10 (module
    docstring for the step size)."""

    randomized = True
    has_approx = True
    trains_alone = True

    @classmethod
    def train_to_file(cls, out, *, dataset, split, data_dir, epochs, seed, quiet, device, settings) -> str:
        """``harness train --defense defense_gan --out G.pt [--set iters=N]``: ``save_generator``."""
        save_generator(out, dataset=dataset, split=split, data_dir=data_dir, epochs=epochs, quiet=quiet, device=device,
                       **{"seed": seed, **settings})
        return f"defense_gan.checkpoint={out}"

    def __init__(self, L: int = QUICK["L"], R: int = QUICK["R"], step_size: float = QUICK["step_size"],
                 dataset: str = "digits", checkpoint: str | None = None, train_iters: int | None = None,
                 train_seed: int = 0, quiet: bool = True, data_dir: str | None = None):
        super().__init__()
        self.L, self.R, self.step_size = _check_range(L, R, step_size)
        self.dataset, self.checkpoint = dataset, checkpoint
        cfg = {"seed": int(train_seed), **({} if train_iters is None else {"iters": int(train_iters)})}
        self.G, self._source = load_or_train_generator(cfg, dataset=dataset, checkpoint=checkpoint,
                                                       data_dir=data_dir, quiet=quiet)
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


def reconstruction_error(g: nn.Module, x: torch.Tensor, L: int, R: int, step_size: float) -> torch.Tensor:
    """Per-pixel mean squared error ||G(z*(x)) - x||_2^2 / dim of the projection (Defense-GAN eq. 8's objective at
    the found z*), per image."""
    return reconstruct(g, x, L, R, step_size)[2] / x[0].numel()

