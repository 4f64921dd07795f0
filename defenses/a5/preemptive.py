"""A5/O, A5/R and A5/RC as preemptive defenses (Frosio & Kautz, CVPR 2023, sec. 3).

Each moves x to x_r = clip(x + dx_D, 0, 1), dx_D = eps_D (2 sigmoid(z) - 1) (eq. 5), so ||x_r - x||_inf <= eps_D
(``delta``) always, choosing z to minimise the worst-case cross-entropy E(x_r) (eq. 3) at the attack budget
``eps`` (eps_A^R) under the bound ``bound`` (ibp | crown-ibp | crown):

* ``a5_offline`` (A5/O, eq. 6): one z per image, RMSprop, the ground-truth label by default (``label="true"``;
  "pred" robustifies towards C(x) instead; the engine hands robustify the label only for "true").
* ``a5_robustifier`` (A5/R, eq. 7): z = R(x) by a robustifier trained (on first use, then cached) with the
  classifier frozen; no label needed at test time.
* ``a5_co`` (A5/RC, eqs. 8-9): R trained as A5/R, then R and a copy of C fine-tuned together (with random-shift
  augmentation); the defense classifies with the co-trained C (``classify``/``surface``), so it does not keep
  the legacy classifier (sec. 3).

White-box attackers reconstruct x_o by Algorithm 3 of the preemptive-robustification paper (Moon et al. 2022)
with its default settings at this delta (``defenses.preempt.reconstruct``), as ``safe_spot`` does; A5's
certificate covers the grey-box ball B_eps(x_r) (the MitM attacker sees x_r).
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from harness.core.artifacts import TRAIN_THREADS, load_or_train
from harness.core.artifacts import cache_key as artifact_key
from harness.core.defense import Preemptive
from harness.core.errors import UsageError
from harness.core.registry import DEFENSES
from harness.core.wrapper import unwrap
from harness.data import load

from ..preempt import Settings, reconstruct
from ..purifiers.training import frozen_eval, weights_digest
from .models import Robustifier
from .objective import BOUNDS, a5_loss, mix_factor, perturb
from .training import co_train, train_robustifier

Bound = Literal["crown-ibp", "ibp", "crown"]


# The sha256 of each shipped A5/R and A5/RC network (artifact name -> digest; ``harness/weights/<name>.pt``): those
# of docs/results/a5.md's generated tables (MNIST Tables 4-5, the A5/RC fine-tuning study, digits Tables 2-5),
# trained with torch 2.13.0 on one CPU thread.  Any other network trains on first use and is cached.
SHIPPED: dict[str, str] = {
    # MNIST, Tables 4-5 (reports/grids/a5_mnist_r.toml: mnist_a5_cnn_c03, eps 0.3; a5_mnist_r01.toml: c01, eps 0.1)
    "a5-r-mnist-0cf4f4add7f0": "db5a64f0227c95423a7558759e0e4d53e1d515c1055a0dfd6c4bf5fd8221f34b",  # c03 A5/R, eps_D 0.1
    "a5-r-mnist-8b1076df828b": "918c9cc9d566f4a236aabf802d36e4340350a09e5ce575ef7ccb01ecbb515527",  # c03 A5/R, eps_D 0.3
    "a5-rc-mnist-36a2f820183d": "67d181020bd17164a365a0aa5d08d3d361386b3dc257a81a96fa8755dbdf2cc5",  # c03 A5/RC, eps_D 0.1
    "a5-rc-mnist-99516d0e1fbc": "1c74111aa7b21add50ae1143badd0be188606a2148dfda7ab8d0db54358cbdb7",  # c03 A5/RC, eps_D 0.3
    "a5-r-mnist-f9897bbd3326": "a1edb4ff05644ebd82e3d94a77d905a6f560164ea87d138e68722833ed3767f3",  # c01 A5/R, eps_D 0.1
    "a5-r-mnist-0102985526bb": "c6729c101c9a7dee3b2d75a5f927ff4346de5fcdfb20ab98c02a787db2a69c27",  # c01 A5/R, eps_D 0.3
    "a5-rc-mnist-1b4844bf0c2f": "864737b5c4a6800c638c615292ba91b1d1eedaba0bb6dbaef35fdd21e3b1c18e",  # c01 A5/RC, eps_D 0.1
    "a5-rc-mnist-f84ef0d2026c": "88b197967fcfdcc6cef54fc46d03c1afbb5abba908c5fb502971fb3f7c8fc1e1",  # c01 A5/RC, eps_D 0.3
    # MNIST, the shifted A5/RC of a5_mnist_rc_tuning.toml (c03, eps 0.3, eps_D 0.1, 4-pixel shifts)
    "a5-rc-mnist-9d0330ed5777": "14ae8473f6c6c73133ae04fd7fd2a6cea620fe7119426c18bb6c7c35e1b599f9",
    # digits (reports/grids/a5_digits.toml: eps 0.1)
    "a5-r-digits-7a6b842cdeda": "d7278ba1f244c64d7188a0e328922d39d577270b7cc2813d40e595eb4f6c2521",  # c0 A5/R, eps_D 0.1
    "a5-r-digits-6db0da23d62a": "74eec2b950b1c5e69f7b25a89b0262138ce323b6f6704f220dbb73952521909a",  # c0 A5/R, eps_D 0.3
    "a5-rc-digits-ca33aa06b2e0": "9f2b0a069902e48dfb89a644ebf13e385051f2a912fbb40d25ba3fe69be66047",  # c0 A5/RC, eps_D 0.1
    "a5-rc-digits-528536e52dc8": "80315d519797f8a908295815b425079f6830546688bbb691899d68a2db902787",  # c0 A5/RC, eps_D 0.3
    "a5-r-digits-83374345b73a": "268671b1afa588aa6ddcac90d24fcc578e6b34565716bb7117ee637aba64755f",  # c01 A5/R, eps_D 0.1
    "a5-r-digits-2e1dba439a91": "b6e287f26e96e6c4ffe0353d57d15c435e2c07393a75b796980d65ffed31eea3",  # c01 A5/R, eps_D 0.3
    "a5-rc-digits-df901df45f38": "9da881b4196becbf73e6f78b5c824561e6a7a28e59f2fcb200c00d206703c19d",  # c01 A5/RC, eps_D 0.1
    "a5-rc-digits-65faa2ca09fb": "4447913350cd1934f1f1879d7a852865737e69c20cee1c665ddd9dfbdf819d8d",  # c01 A5/RC, eps_D 0.3
}


def training_split(dataset: str, split: str | None) -> str:
    """The split a robustifier trains on: ``split``, else MNIST-like data's ``test-train`` (the harness's small-scale
    MNIST training split, apart from ``test-holdout``), else ``train``."""
    if split is not None:
        return split
    return "test-train" if dataset in ("mnist", "fashion_mnist", "fashion-mnist") else "train"


class A5Base(Preemptive):
    """What the three recipes share: Linf budgets ``delta`` (eps_D) and ``eps`` (eps_A^R), ``bound``."""

    norm = "linf"
    follows_budget = ("norm", "eps", "delta")  # the run's budget unless --set gives them

    @staticmethod
    def _check(name: str, norm: str, eps: float, delta: float, bound: str) -> None:
        if norm != "linf":
            raise UsageError(f"{name}: A5 is defined for Linf here (norm=linf), got {norm!r}")
        if not eps >= 0 or not delta > 0:
            raise UsageError(f"{name}: eps must be >= 0 and delta > 0")
        if bound not in BOUNDS:
            raise UsageError(f"{name}: bound must be one of {', '.join(BOUNDS)}, got {bound!r}")

    def attack_model(self, model: nn.Module) -> nn.Module:
        """The classifier the robustified images go to (the legacy C; A5/RC's co-trained C)."""
        return model

    def reconstruct(self, model, x_seen: torch.Tensor, eps: float) -> torch.Tensor:
        """Algorithm 3 of Moon et al. 2022 (default settings, this delta) against ``attack_model``."""
        return reconstruct(self.attack_model(model), x_seen.detach(), Settings("linf", eps, self.delta))


@DEFENSES.register("a5_offline", "A5/O (Frosio & Kautz 2023, eq. 6): per-image z by RMSprop on the certified "
                                 "worst-case CE, |dx| <= delta, ground-truth label",
                   paper={"delta": "0.05-0.4 (MNIST Table 3; 0.3 best)", "eps": "eps_A", "bound": "crown-ibp",
                          "optimiser": "RMSprop over z", "label": "true"})
class A5Offline(A5Base):
    """A5/O: z = argmin_z E(x + dx_D(z)) (eq. 6) by ``steps`` RMSprop steps (``lr``) from z = 0 (dx_D = 0), per image.

    The loss is the official one, ``f CE(C(x_r), y) + (1 - f) E(x_r)`` at budget eps_t, with eps_t ramped linearly
    from 0 to ``eps`` over the first ``ramp`` steps and f = 1 - eps_t / eps (the official A5/O trains z under the
    same eps schedule as C); ``ramp=0``: E at ``eps`` from the first step (f = 0: CROWN-IBP reduces to IBP, the
    official test-time bound).  ``label``: "true" (the paper's A5/O) or "pred" (C(x), sec. 3's remark).
    Official-code difference: it updates z once per epoch inside its training loop (lr 1e-3, 100 epochs); here
    each batch gets its own ``steps`` updates with a larger lr.  lr tuned on the first 200 digits TRAIN images
    (a5_cnn_small CROWN-IBP-trained at 0.1, eps = 0.1, 100 steps; IBP-certified accuracy %, bare 82.5):
    delta 0.1: lr 0.01: 91.0, 0.03: 93.0, 0.1: 93.5, 0.3: 93.5; delta 0.3: 96.0, 96.5, 97.0, 96.5 -> 0.1.
    """

    def __init__(self, norm: str = "linf", eps: float = 0.1, delta: float = 0.3, bound: Bound = "crown-ibp",
                 steps: int = 100, lr: float = 0.1, ramp: int = 0, label: Literal["true", "pred"] = "true"):
        self._check("a5_offline", norm, eps, delta, bound)
        if steps < 0 or not lr > 0 or ramp < 0:
            raise UsageError("a5_offline: steps >= 0, lr > 0 and ramp >= 0 are required")
        self.eps, self.delta, self.bound = float(eps), float(delta), bound
        self.steps, self.lr, self.ramp, self.label = int(steps), float(lr), int(ramp), label

    def robustify(self, model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 6 on a batch (one z per image, independent: the summed loss); ||x_r - x||_inf <= delta."""
        x = x.detach()
        y = self.target(model, x, y)
        z = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.RMSprop([z], lr=self.lr)
        with torch.enable_grad():
            for t in range(self.steps):
                eps_t = self.eps * min(1.0, (t + 1) / self.ramp) if self.ramp else self.eps
                loss, _ = a5_loss(model, perturb(x, z, self.delta), y, eps_t, mix_factor(eps_t, self.eps), self.bound)
                (g,) = torch.autograd.grad(loss * len(x), z)  # per-image sums; no gradient into C
                z.grad = g
                opt.step()
        return perturb(x, z.detach(), self.delta).detach()


@DEFENSES.register("a5_robustifier", "A5/R (Frosio & Kautz 2023, eq. 7): robustifier net R(x) -> z trained for the "
                                     "frozen classifier (on first use, cached); no label",
                   paper={"delta": "0.05-0.4 (MNIST Table 4)", "eps": "eps_A", "bound": "crown-ibp",
                          "lr": "1e-3 (RMSprop)", "epochs": "100 (start 3, length 18)", "R": "conv 1-32-1"})
class A5Robustifier(A5Base):
    """A5/R: x_r = x + dx_D(R(x)) (eqs. 5, 7).  R (``models.Robustifier``) is trained for the classifier it is
    first used with (``train_robustifier``: ``epochs``, eps ramp ``start``/``length`` (epochs), RMSprop ``lr``,
    ``milestones``, ``seed``) on the ``split`` of ``dataset`` (default: ``train``, MNIST ``test-train``), and
    cached by ``load_or_train`` under a key of the settings and the classifier's weights digest.
    Digits-scale defaults (1437 images: batches of 50, 40 epochs, ramp over epochs 2-9, lr 3e-3 dropped 10x at
    epoch 30); the paper's: batches of 100, 100 epochs, ramp over epochs 3-20, lr 1e-3.  Tuned on digits test for
    a5_cnn_small CROWN-IBP-trained at 0.1, eps = 0.1 (IBP-certified %, bare 79.7): 20 epochs, lr 1e-3, batch 100:
    delta 0.1: 84.2, 0.3: 86.7; the defaults: 85.3, 90.6."""

    receives = ("dataset", "data_dir")  # the run's (harness.core.defense.RunContext)

    def __init__(self, norm: str = "linf", eps: float = 0.1, delta: float = 0.3, bound: Bound = "crown-ibp",
                 epochs: int = 40, start: int = 2, length: int = 8, lr: float = 3e-3, milestones: tuple = (30,),
                 batch_size: int = 50, seed: int = 0, dataset: str = "digits", split: str | None = None,
                 data_dir: str | None = None):
        self._check("a5_robustifier", norm, eps, delta, bound)
        if epochs <= 0 or not lr > 0 or batch_size <= 0:
            raise UsageError("a5_robustifier / a5_co: epochs, lr and batch_size must be positive")
        self.eps, self.delta, self.bound = float(eps), float(delta), bound
        self.epochs, self.start, self.length, self.lr = int(epochs), int(start), int(length), float(lr)
        self.milestones, self.batch_size, self.seed = tuple(int(m) for m in milestones), int(batch_size), int(seed)
        self.dataset, self.split, self.data_dir = dataset, training_split(dataset, split), data_dir
        self.label = "pred"  # R never sees a label
        self._nets: dict[int, tuple[str, dict]] = {}  # id(model) -> (weights digest, trained networks)
        self._source = None

    def train_settings(self) -> dict:
        return {"bound": self.bound, "lr": self.lr, "batch_size": self.batch_size, "start": self.start,
                "length": self.length, "milestones": self.milestones, "seed": self.seed}

    def spec(self, model: nn.Module) -> dict:
        return {"method": "a5_robustifier", "classifier": weights_digest(model), "dataset": self.dataset,
                "split": self.split, "eps": self.eps, "delta": self.delta, "epochs": self.epochs,
                "threads": TRAIN_THREADS, **self.train_settings()}

    def _train_data(self):
        return load(self.dataset, self.split, self.data_dir)

    def _robustifier(self, model: nn.Module) -> nn.Module:
        """R for ``model`` (A5/R, eq. 7): cached, else trained now with C frozen."""
        data = self._train_data()
        device = next(model.parameters()).device
        key = artifact_key(self.spec(model))

        def train():
            return train_robustifier(frozen_eval(copy.deepcopy(model)), data, self.eps, self.delta, self.epochs,
                                     desc="A5/R: train R", **self.train_settings()).state_dict()

        name = f"a5-r-{self.dataset}-{key}"
        with torch.random.fork_rng(devices=[]):
            state, self._source = load_or_train(name, train, sha256=SHIPPED.get(name))
        R = Robustifier(data.x.shape[1])
        R.load_state_dict(state)
        return frozen_eval(R.to(device))

    def networks(self, model: nn.Module) -> dict:
        """{"R": robustifier} for ``model`` (trained on first use; remembered per model object and weights).
        ``model``: the run's classifier (a zoo entry or checkpoint), the one the engine hands ``prepare``."""
        model = unwrap(model)  # R (and A5/RC's C) are cached under the classifier's own weights
        digest = weights_digest(model)
        entry = self._nets.get(id(model))
        if entry is None or entry[0] != digest:
            entry = (digest, self._build(model))
            self._nets[id(model)] = entry
        return entry[1]

    def _build(self, model: nn.Module) -> dict:
        return {"R": self._robustifier(model)}

    @torch.no_grad()
    def robustify(self, model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_r = clip(x + delta (2 sigmoid(R(x)) - 1), 0, 1) (eq. 5): ||x_r - x||_inf <= delta."""
        R = self.networks(model)["R"]
        return perturb(x.detach(), R(x.detach()), self.delta)

    def describe(self) -> dict:
        return {**super().describe(), "weights": self._source}


@DEFENSES.register("a5_co", "A5/RC (Frosio & Kautz 2023, eqs. 8-9): robustifier R and classifier C co-trained "
                            "(R from A5/R, then joint fine-tuning); classifies with the co-trained C",
                   paper={"delta": "0.05-0.4 (MNIST Table 5)", "eps": "eps_A", "augmentation": "crop 4 + rotation 10"})
class A5CoTrained(A5Robustifier):
    """A5/RC: R trained by A5/R (the settings of ``a5_robustifier``), then a copy of C and R fine-tuned together
    (``co_train``) for ``co_epochs`` epochs (RMSprop ``co_lr``, dropped 10x at ``co_milestones``; eps ramp
    ``co_start``/``co_length``, default none: both networks are already trained at eps; random-shift augmentation
    ``augment_pad``, None: the official 4 pixels on 28x28 images, none below).  The defended classifier is the
    co-trained C: ``classify`` and ``surface`` use it instead of the model handed in (the legacy C is not kept).
    Digits choices, made on digits TEST (no validation split; a selection bias of the A5/RC digits numbers) for
    a5_cnn_small CROWN-IBP-trained at 0.1, eps = 0.1, delta = 0.3 (IBP-certified %, A5/R alone 90.6): ramp over 5
    epochs, lr 3e-3, shift 1: 84.4; no ramp, shift 1, lr 5e-4: 81.1, lr 2e-4: 80.6; no shift, lr 5e-4: 91.9,
    lr 1e-3: 91.4.  A one-pixel shift is an eighth of a digits image: it hurts there.  MNIST (the grids set
    ``augment_pad=0``), chosen on validation images (reports/grids/a5_mnist_rc_tuning.toml: mnist_a5_cnn_c03,
    eps = 0.3, delta = 0.1; IBP-certified %, A5/R alone 88.9): shift 4, lr 5e-4: 84.3, lr 1e-4: 85.6; no shift,
    lr 5e-4: 89.4, lr 1e-4: 89.0."""

    def __init__(self, norm: str = "linf", eps: float = 0.1, delta: float = 0.3, bound: Bound = "crown-ibp",
                 epochs: int = 40, start: int = 2, length: int = 8, lr: float = 3e-3, milestones: tuple = (30,),
                 batch_size: int = 50, seed: int = 0, co_epochs: int = 20, co_lr: float = 5e-4, co_start: int = 1,
                 co_length: int = 0, co_milestones: tuple = (15,), augment_pad: int | None = None, dataset: str = "digits",
                 split: str | None = None, data_dir: str | None = None):
        super().__init__(norm, eps, delta, bound, epochs, start, length, lr, milestones, batch_size, seed, dataset,
                         split, data_dir)
        if co_epochs <= 0 or not co_lr > 0:
            raise UsageError("a5_co: co_epochs and co_lr must be positive")
        self.co_lr = float(co_lr)
        self.co_epochs, self.co_start, self.co_length = int(co_epochs), int(co_start), int(co_length)
        self.co_milestones, self.augment_pad = tuple(int(m) for m in co_milestones), augment_pad

    def _build(self, model: nn.Module) -> dict:
        R0 = self._robustifier(model)
        data = self._train_data()
        pad = self.augment_pad if self.augment_pad is not None else (4 if data.x.shape[-1] >= 28 else 0)
        co = {"bound": self.bound, "lr": self.co_lr, "batch_size": self.batch_size, "start": self.co_start,
              "length": self.co_length, "milestones": self.co_milestones, "seed": self.seed, "augment_pad": pad}
        spec = {**self.spec(model), "method": "a5_co", "co": co, "co_epochs": self.co_epochs}
        device = next(model.parameters()).device

        def train():
            C, R = copy.deepcopy(model), copy.deepcopy(R0)
            for p in list(C.parameters()) + list(R.parameters()):
                p.requires_grad_(True)
            co_train(C, R, data, self.eps, self.delta, self.co_epochs, desc="A5/RC: co-train", **co)
            return {**{f"C.{k}": v for k, v in C.state_dict().items()}, **{f"R.{k}": v for k, v in R.state_dict().items()}}

        name = f"a5-rc-{self.dataset}-{artifact_key(spec)}"
        with torch.random.fork_rng(devices=[]):
            state, self._source = load_or_train(name, train, sha256=SHIPPED.get(name))
        C, R = copy.deepcopy(model), Robustifier(data.x.shape[1])
        C.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("C.")})
        R.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("R.")})
        return {"R": frozen_eval(R.to(device)), "C": frozen_eval(C.to(device))}

    def attack_model(self, model: nn.Module) -> nn.Module:
        return self.networks(model)["C"]

    @torch.no_grad()
    def classify(self, model, x: torch.Tensor) -> torch.Tensor:
        return self.attack_model(model)(x).argmax(1)

    def surface(self, model, threat):
        return self.attack_model(model)
