"""MagNet (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples", CCS 2017).

MagNet neither changes the classifier nor looks at adversarial examples: it trains an autoencoder ``ae`` on clean
images only and uses it twice (lecture slides "MagNet", "MagNet: detector", "MagNet: reformer"):

* **Training** (slide "MagNet: detector"): minimise the reconstruction error over the training set,

      L(X_train) = 1/|X_train| sum_{x in X_train} ||x - ae(x)||_2   (the slide; the official code minimises the MSE)

  as a *denoising* autoencoder: the inputs get Gaussian noise, ae(clip(x + v N(0, I), 0, 1)) is fitted to x
  (official ``defensive_models.py``: ``v_noise = 0.1`` for MNIST, MSE loss, Adam, batch 256, 100 epochs).  Here
  the noise is drawn afresh for every batch (the official code draws it once for the whole run) - the standard
  denoising-autoencoder recipe; ``noise`` = 0.1 by default.  Training goes through the purifier loop of
  ``defenses.purifiers.training`` (``train_purifier``; this module registers the method ``magnet`` there, so
  ``harness train --defense magnet --out ae.pt`` saves an autoencoder and ``--set magnet.checkpoint=ae.pt`` loads
  it); the autoencoder does not depend on the classifier, so the cache key has no target model in it.

* **Detectors** (slide "MagNet: detector"; reject when ANY detector fires, as MagNet's ``Operator.filter``):
  - reconstruction error ``l1`` / ``l2``: D(x) = ||x - ae(x)||_p.  The slide writes p = 2; MagNet's MNIST setting
    (official ``test_defense.py``) uses two such detectors, detector I with p = 2 and detector II with p = 1
    (on two different autoencoders; the default here is that pair on the one autoencoder, ``detectors="l2,l1"``,
    since the JSD detectors add little on digits and reject clean images of their own).  The official
    ``AEDetector`` scores mean(|x - ae(x)|^p) = ||x - ae(x)||_p^p / dim: a monotone function of ||.||_p for a fixed
    image size, so thresholds set at a false-positive rate, the decisions and the AUROC are the same.
  - ``jsd<T>`` (e.g. ``jsd10``, ``jsd40``): D(x) = JSD(p || q), p = softmax(Z(x)/T), q = softmax(Z(ae(x))/T), Z the
    classifier's logits, JSD(p || q) = KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2 (natural log, as the official
    ``worker.JSD`` with scipy's ``entropy``).  MagNet uses T = 10 and T = 40 (its CIFAR-10 detectors).
  Each detector i gets its own threshold tau_i, set on clean images so that it rejects at most ``fpr`` of them
  (MagNet's ``Operator.get_thrs``: a "drop rate" per detector on validation data; 0.001 in the official MNIST
  script).  Default ``fpr`` = 0.01 per detector on the digits TRAINING split (1437 images: 0.1% would be one or
  two images, so 1% is the smallest rate with a stable quantile; a held-out part of digits would be smaller
  still).  The default autoencoder has 142 parameters and hardly overfits, so the test-split rate is close;
  for the JSD detectors the classifier also saw the training split, so its test-split rate can be a little
  higher.  Several detectors reject up to the sum of their rates.

* **Reformer** (slide "MagNet: reformer"): the classifier sees ae(x) instead of x (the official ``SimpleReformer``
  clips ae(x) to [0, 1]; the sigmoid output layer is already in [0, 1]).  ``reformer=False`` classifies x itself
  (detector only); ``detectors="none"`` is the reformer alone (then the defense reports itself as a preprocessor).

Harness contract (the ``Detector`` kind, as ``defenses.ood``): ``score`` is higher for accepted inputs,

    s(x) = min_i (1 - D_i(x) / tau_i),   tau = 0:   accepted iff s(x) >= 0 iff D_i(x) <= tau_i for every i,

(the relative margin of the detector closest to firing; for a single detector s = 1 - D/tau ranks inputs as -D
does, so ``det_auroc`` is the detector's own AUROC); ``classify`` = argmax Z(ae(x)) when accepted, -1 (ABSTAIN)
when rejected; ``calibrate`` sets every tau_i (on first use with the evaluated model: the JSD detectors depend
on it); ``surrogate_score`` = s itself (D and the reformer are differentiable, so the adaptive attack sees the
exact score); ``surface``: white-box attackers differentiate Z(ae(x)), oblivious ones attack the bare Z(x).
The adaptive attacks are ``pgd_detector`` (PGD on CE - lambda max(-s, 0)) and ``magnet_cw`` (Carlini & Wagner's
attack on MagNet, ``attacks/magnet_cw.py``).

Autoencoder (``MagNetAutoencoder``): MagNet's ``DenoisingAutoEncoder``: for each entry of ``structure`` a 3x3
convolution with that many channels and the ``activation`` (sigmoid in MagNet's MNIST models), or a 2x2 pooling
("average" / "max"); the decoder mirrors it (pooling -> 2x nearest upsampling), and a last 3x3 convolution with
a sigmoid gives the image.  MagNet's MNIST autoencoder I is ``"3,average,3"`` (the reformer and detector I),
autoencoder II ``"3"``; the default here is autoencoder II's structure (see ``DEFAULTS``).  The official activity
regulariser (L2, 1e-9) is left out (negligible).
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.artifacts import TRAIN_THREADS
from harness.core.artifacts import cache_key as artifact_key
from harness.core.artifacts import load_or_train as load_artifact
from harness.core.defense import ABSTAIN
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES
from harness.data import load
from harness.models.checkpoint import load_checkpoint
from harness.ood_metrics import threshold_at_tpr

from .ood import ThresholdDetector
from .purifiers.training import Context, Method, frozen_eval, register_method, train_purifier, weights_digest

BATCH = 500

# digits: about 8 s on one CPU thread.  MagNet's MNIST setting is 100 epochs of 55,000 images (about 21,500
# Adam steps of 256); digits has 1437 training images (6 steps an epoch), so more epochs and a larger step
# (lr 1e-2, divided by 10 after 70% of the epochs).  Structure "3" is MagNet's MNIST autoencoder II: on 8x8 images
# autoencoder I's pooling to 4x4 costs the classifier 3 points of clean accuracy (digits_cnn_adv on the test
# split: 95.6% -> 92.8% with "3,average,3", 95.3% with "3"), and "3" also reforms and detects better.
DEFAULTS = {"structure": "3", "activation": "sigmoid", "noise": 0.1, "optimizer": "adam", "lr": 1e-2,
            "weight_decay": 0.0, "milestones": (0.7,), "gamma": 0.1, "epochs": 400, "batch_size": 256, "seed": 0}

# The official MNIST settings (github.com/Trevillie/MagNet: train_defense.py, test_defense.py).  Documented, not run.
PAPER = {"structure_I": "3,average,3", "structure_II": "3", "activation": "sigmoid", "noise": 0.1, "loss": "mse",
         "optimizer": "adam (keras defaults, lr 1e-3)", "epochs": 100, "batch_size": 256, "reg_strength": 1e-9,
         "detectors": "I: l2 (autoencoder I), II: l1 (autoencoder II); CIFAR-10: jsd T=10, T=40",
         "reformer": "autoencoder I", "drop_rate": 0.001}


# --------------------------------------------------------------------------------------------------------------
# Autoencoder and its training
# --------------------------------------------------------------------------------------------------------------


def parse_structure(text: str) -> list:
    """``"3,average,3"`` -> [3, "average", 3]."""
    out = []
    for tok in str(text).replace(" ", "").split(","):
        if tok.isdigit() and int(tok) > 0:
            out.append(int(tok))
        elif tok in ("average", "max"):
            out.append(tok)
        else:
            raise UsageError(f"magnet: structure entries are channel counts or average/max, got {tok!r} in {text!r}")
    if not any(isinstance(t, int) for t in out):
        raise UsageError(f"magnet: structure needs at least one convolution, got {text!r}")
    return out


class MagNetAutoencoder(nn.Module):
    """MagNet's ``DenoisingAutoEncoder`` (module docstring): convs/poolings, the mirrored decoder, a sigmoid conv."""

    def __init__(self, in_channels: int = 1, structure: str = DEFAULTS["structure"],
                 activation: str = DEFAULTS["activation"]):
        super().__init__()
        acts = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}
        if activation not in acts:
            raise UsageError(f"magnet: activation must be sigmoid or relu, got {activation!r}")
        layers, c = [], in_channels
        spec = parse_structure(structure)
        for t in spec:
            if isinstance(t, int):
                layers += [nn.Conv2d(c, t, 3, 1, 1), acts[activation]()]
                c = t
            else:
                layers.append(nn.AvgPool2d(2, ceil_mode=True) if t == "average" else nn.MaxPool2d(2, ceil_mode=True))
        for t in reversed(spec):
            if isinstance(t, int):
                layers += [nn.Conv2d(c, t, 3, 1, 1), acts[activation]()]
                c = t
            else:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [nn.Conv2d(c, in_channels, 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if out.shape[-2:] != x.shape[-2:]:  # odd sizes: pooling rounds up, crop back
            out = out[..., : x.shape[-2], : x.shape[-1]]
        return out


def _craft(ctx: Context, x_in: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The denoising input clip(x + noise * N(0, I), 0, 1) (MagNet: v_noise = 0.1 on MNIST); labels unused."""
    return (x + ctx.cfg["noise"] * torch.randn_like(x)).clamp(0, 1)


def _loss(ctx: Context, x_noisy: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """MSE(ae(x_noisy), x) (MagNet's ``mean_squared_error``; the slide writes the mean of ||x - ae(x)||_2)."""
    mse = F.mse_loss(ctx.net(x_noisy), x)
    return mse, {"mse": mse.detach()}


METHOD = register_method(Method(
    "magnet", build=lambda c, cfg: MagNetAutoencoder(c, cfg["structure"], cfg["activation"]), defaults=DEFAULTS,
    paper=PAPER, craft=_craft, loss=_loss))


class _NoTarget(nn.Module):
    """MagNet's autoencoder is trained without the classifier; ``train_purifier`` only reads its target's device."""

    def __init__(self, device):
        super().__init__()
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)


def train_autoencoder(data, epochs: int | None = None, *, quiet: bool = True, log: list | None = None,
                      device: str | torch.device = "cpu", **settings) -> nn.Module:
    """Train MagNet's autoencoder on ``data`` (an ImageSet or (x, y); labels unused): Adam on MSE(ae(x~), x) with
    x~ = clip(x + noise N(0, I), 0, 1), the purifier loop of ``defenses.purifiers.training`` (one thread on the CPU,
    seeded by ``seed``: bit-reproducible; the caller's RNG is left as it was).  ``settings`` override ``DEFAULTS``;
    ``log`` receives the mean MSE per epoch; ``quiet=False`` shows a tqdm bar.  Returns the network in eval mode."""
    return train_purifier("magnet", _NoTarget(device), data, epochs, quiet=quiet, log=log, **settings)


# The sha256 of each shipped autoencoder (artifact name -> digest; ``harness/weights/<name>.pt``): the digits
# autoencoder of the README's MagNet tables (default settings), trained with torch 2.13.0 on one CPU thread.
SHIPPED: dict[str, str] = {
    "magnet-ae-digits-edfd946e63f8": "4305d1e60c7b3585370269e97ae20f14099b0698e81aab43e999948df3517742",
}


def cache_key(cfg: dict, dataset: str) -> str:
    return artifact_key({"method": "magnet", "cfg": cfg, "dataset": dataset, "threads": TRAIN_THREADS})


def load_or_train_autoencoder(cfg: dict | None = None, *, dataset: str = "digits", checkpoint: str | None = None,
                              data_dir: str | None = None, quiet: bool = True) -> tuple[nn.Module, str]:
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
            state, source = load_artifact(artifact, lambda: train_autoencoder(data, quiet=quiet, **cfg).state_dict(),
                                          sha256=SHIPPED.get(artifact))
            net.load_state_dict(state)
    return frozen_eval(net), source


# --------------------------------------------------------------------------------------------------------------
# Detector scores
# --------------------------------------------------------------------------------------------------------------


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor, p: int) -> torch.Tensor:
    """D(x) = ||x - ae(x)||_p per image (slide "MagNet: detector"; p = 1 or 2)."""
    return torch.linalg.vector_norm((x - recon).flatten(1), ord=p, dim=1)


def jsd(z_p: torch.Tensor, z_q: torch.Tensor, T: float) -> torch.Tensor:
    """JSD(p || q) per row, p = softmax(z_p / T), q = softmax(z_q / T), natural log (slide "MagNet: detector").

    Computed in float64: at T = 40 the divergence of a clean image is about 1e-5, a difference of logarithms of
    order 1 that float32 would resolve to a few percent only."""
    lp, lq = F.log_softmax(z_p.double() / T, 1), F.log_softmax(z_q.double() / T, 1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2.0)
    return (0.5 * ((lp.exp() * (lp - lm)).sum(1) + (lq.exp() * (lq - lm)).sum(1))).to(z_p.dtype)


def parse_detectors(text: str) -> list[tuple[str, str, float]]:
    """``"l1,jsd10"`` -> [("l1", "recon", 1), ("jsd10", "jsd", 10.0)]; ``"none"`` or "" -> []."""
    out = []
    for tok in str(text).replace(" ", "").lower().split(","):
        if tok in ("", "none"):
            continue
        m = re.fullmatch(r"jsd(\d+(?:\.\d+)?)", tok)
        if tok in ("l1", "l2"):
            out.append((tok, "recon", int(tok[1])))
        elif m and float(m.group(1)) > 0:
            out.append((tok, "jsd", float(m.group(1))))
        else:
            raise UsageError(f"magnet: detectors are l1, l2, jsd<T> (e.g. jsd10) or none, got {tok!r}")
        if [d[0] for d in out].count(out[-1][0]) > 1:
            raise UsageError(f"magnet: detector {tok!r} is listed twice")
    return out


class _Reformed(nn.Module):
    """Z(ae(x)): the classifier behind the reformer, the white-box surface of MagNet."""

    def __init__(self, ae: nn.Module, classifier: nn.Module):
        super().__init__()
        self.ae, self.classifier = ae, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.ae(x))


# --------------------------------------------------------------------------------------------------------------
# The defense
# --------------------------------------------------------------------------------------------------------------


@DEFENSES.register("magnet", "MagNet (Meng & Chen 2017): autoencoder reformer + detectors (l1/l2 reconstruction error, "
                             "jsd<T>), each rejecting fpr of clean images")
class MagNet(ThresholdDetector, nn.Module):
    """MagNet (module docstring): ``detectors`` (comma-separated ``l1``, ``l2``, ``jsd<T>``, or ``none``), each
    rejecting at most ``fpr`` of the clean ``calib_split`` images of ``dataset`` (the first ``calib_n``; None: all);
    ``reformer``: classify ae(x) (else x).  The autoencoder: ``checkpoint`` (a state dict), else trained on first
    use (``structure``, ``noise``, ``train_epochs``, ``train_seed``) and cached."""

    def __init__(self, detectors: str = "l2,l1", fpr: float = 0.01, reformer: bool = True,
                 checkpoint: str | None = None, dataset: str = "digits", structure: str = DEFAULTS["structure"],
                 noise: float = DEFAULTS["noise"], train_epochs: int = DEFAULTS["epochs"], train_seed: int = 0,
                 calib_split: str = "train", calib_n: int | None = None, data_dir: str | None = None):
        nn.Module.__init__(self)
        if not 0 < fpr < 1:
            raise UsageError(f"magnet: fpr must be in (0, 1), got {fpr}")
        ThresholdDetector.__init__(self, 1 - fpr, None, dataset, calib_split, calib_n, data_dir)
        self._detectors = parse_detectors(detectors)
        self.detectors = ",".join(d[0] for d in self._detectors) or "none"
        self.fpr, self.reformer = float(fpr), bool(reformer)
        if not self._detectors:
            if not self.reformer:
                raise UsageError("magnet: with no detector and no reformer nothing is left of the defense")
            self.kind = "preprocessor"  # the reformer alone
        cfg = {"structure": structure, "noise": float(noise), "epochs": int(train_epochs), "seed": int(train_seed)}
        self.ae, self._source = load_or_train_autoencoder(cfg, dataset=dataset, checkpoint=checkpoint,
                                                          data_dir=data_dir)
        self._params = {"detectors": self.detectors, "fpr": self.fpr, "reformer": self.reformer,
                        "checkpoint": checkpoint, "dataset": dataset, "calib_split": calib_split, "calib_n": calib_n,
                        **({} if checkpoint else cfg), "weights": weights_digest(self.ae)}
        self.thresholds: dict[str, float] = {}
        self.eval()

    # ---------------------------------------------------------------- scores
    def describe(self) -> dict:
        return dict(self._params)

    def reform(self, x: torch.Tensor) -> torch.Tensor:
        """R(x) = ae(x) (already in [0, 1]: sigmoid output)."""
        return self.ae(x)

    def parts(self, model: nn.Module, x: torch.Tensor) -> dict:
        """One pass (differentiable when ``x`` requires a gradient): the reformed image, the logits the defended
        classifier decides on (Z(ae(x)), or Z(x) without the reformer) and every detector's D(x)."""
        model = model.classifier if isinstance(model, _Reformed) else model
        recon = self.ae(x)
        z_r = model(recon) if self.reformer or any(k == "jsd" for _, k, _ in self._detectors) else None
        z_x = model(x) if not self.reformer or any(k == "jsd" for _, k, _ in self._detectors) else None
        values = {}
        for name, kind, arg in self._detectors:
            values[name] = reconstruction_error(x, recon, int(arg)) if kind == "recon" else jsd(z_x, z_r, arg)
        return {"recon": recon, "logits": z_r if self.reformer else z_x, "values": values}

    def combine(self, values: dict, like: torch.Tensor) -> torch.Tensor:
        """s = min_i (1 - D_i / tau_i) (>= 0: accepted); zeros without detectors."""
        if not self._detectors:
            return like.new_zeros(len(like))
        return torch.stack([1 - values[n] / self.thresholds[n] for n, _, _ in self._detectors]).amin(0)

    @torch.no_grad()
    def detector_values(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every detector's D(x), in chunks of ``BATCH`` images."""
        chunks = [self.parts(model, x[i:i + BATCH])["values"] for i in range(0, len(x), BATCH)]
        return {n: torch.cat([c[n] for c in chunks]) if chunks else x.new_zeros(0) for n, _, _ in self._detectors}

    def _score(self, model, x):
        if self._tau is None:
            self.calibrate(model)
        return self.combine(self.detector_values(model, x), x)

    def surrogate_score(self, model, x: torch.Tensor) -> torch.Tensor:
        """The score itself, differentiable (D and ae are): what ``pgd_detector`` ascends.  ``model`` may be the
        bare classifier or the white-box surface (its classifier is then used for the JSD detectors)."""
        if self._tau is None:
            self.calibrate(model.classifier if isinstance(model, _Reformed) else model)
        return self.combine(self.parts(model, x)["values"], x)

    def attack_parts(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of the defended classifier, score) in one differentiable pass (for ``magnet_cw``)."""
        if self._tau is None:
            self.calibrate(model.classifier if isinstance(model, _Reformed) else model)
        r = self.parts(model, x)
        return r["logits"], self.combine(r["values"], x)

    # ---------------------------------------------------------------- calibration and decisions
    @property
    def tau(self) -> float | None:
        return self._tau

    def calibrate(self, model, x: torch.Tensor | None = None) -> float:
        """tau_i = the largest threshold with at most ``fpr`` of the clean images (``x``, default: the calibration
        split) having D_i > tau_i (MagNet's per-detector drop rate); the combined score's threshold is 0."""
        if x is None:

            data = load(self.dataset, self.calib_split, self.data_dir)
            x = data.take(None if self.calib_n is None else min(self.calib_n, len(data))).x
        device = next(self.ae.parameters()).device
        values = self.detector_values(model, x.to(device))
        self.thresholds = {n: max(-threshold_at_tpr(-v.cpu(), 1 - self.fpr), 1e-12) for n, v in values.items()}
        self._tau, self._cache = 0.0, None
        return self._tau

    @torch.no_grad()
    def classify(self, model, x: torch.Tensor) -> torch.Tensor:
        if self._tau is None:
            self.calibrate(model)
        r = self.parts(model, x)
        pred = r["logits"].argmax(1)
        s = self.combine(r["values"], x).detach()
        self._cache = (x, x._version, s)  # ``score`` on the same tensor reuses it
        return torch.where(s >= self._tau, pred, torch.full_like(pred, ABSTAIN))

    def surface(self, model, threat):
        return model if threat == "oblivious" or not self.reformer else _Reformed(self.ae, model)

    def extra_repr(self) -> str:
        return f"detectors={self.detectors}, fpr={self.fpr}, reformer={self.reformer}, weights from {self._source}"
