"""The zoo: named, trained models.

A zoo entry is a recipe (dataset, architecture, training recipe and its settings) and, for the entries the result pages,
the CI baseline and the default run rest on, the sha256 of its shipped weights (``harness/weights/``, package
data).  ``load_zoo`` takes the shipped weights where an entry has them, else weights trained earlier on this
machine (``$HARNESS_CACHE``), else trains now on one thread with the entry's seed (deterministic on one machine,
not across CPUs: see ``harness.artifacts``) and caches them.  Weights are loaded with ``weights_only=True``.
``scripts/ship_weights.py NAME ...`` trains entries and writes their shipped weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..core.artifacts import TRAIN_THREADS, cache_key, load_or_train, torch_threads
from ..core.registry import MODELS, RECIPES, ZOO
from ..core.training import fit
from ..data import load


@dataclass(frozen=True)
class ZooSpec:
    dataset: str
    arch: str
    recipe: str
    epochs: int
    arch_kw: dict = field(default_factory=dict)
    recipe_kw: dict = field(default_factory=dict)
    split: str = "train"
    lr: float = 0.1
    batch_size: int = 128
    seed: int = 0
    sha256: str | None = field(default=None, compare=False)  # of the shipped weights; None: trained on first use

    def key(self) -> str:
        """What defines the trained weights (the recipe, not where they are stored)."""
        spec = {k: v for k, v in asdict(self).items() if k != "sha256"}
        return cache_key({**spec, "threads": TRAIN_THREADS})

    @property
    def shipped(self) -> bool:
        return self.sha256 is not None


# The sha256 of each shipped weights file, ``harness/weights/<name>-<key>.pt`` (written by
# ``scripts/ship_weights.py``, trained with torch 2.13.0 on one CPU thread).  The MNIST CNNs are shipped; the A5 MNIST classifiers are not.
SHIPPED = {
    "digits_cnn": "3a21c97fade0dd7df751ad97e2faaef2b4f415c1fbc5e5951b14979077dda68f",
    "digits_cnn_adv": "9739d04c1a3d5a62d895f04e169a5c1de9f7bd611a516164ede4f8fee9595485",
    "digits_cnn_adv_l2": "be3cbf8951cdbc34ae314ce6004b3b7a9c025ce73a4a068dc13cc7334a5975eb",
    "digits_cnn_gauss": "a38394de772283833c100b2ebd72e8743e9465a06e7ce8adbefcd862029d8248",
    "digits_cnn_gauss01": "24ab7e23d282e8f50370598b4ef635076c61e118448920e3882311cc550b87df",
    "digits_cnn_preempt": "1b4102d396a47d640d46b8156720f4418390eb9ab7ee6ec0af77bf0d2a37f8d9",
    "digits_cnn_preempt_l2": "5c5607ae8a0bcef253cbe0b3ee55a6de3b45cff22b7df3f74615c65e6f963764",
    "digits_cnn_adv_e30": "4602694b659529b96e69a7e132fb3973ebd696e5be79c5f3c857dc2ffe7daf26",
    "digits_cnn_adv_l2_e30": "88e62ad40328e88d2a874a83c30595c2e88e9be5368fa6963be962461f03a258",
    "digits_cnn_sfgsm_adv": "f71a1dc5e558e3cdf6152d281b3fd7ba46cec1b2316a6acecbff5e827b054866",
    "digits_cnn_spgd_adv": "6aa4ceb4abc38b5171dc5417a63307bde6d041cff9d2ef9c1e76402d12f60107",
    "digits_a5_cnn_c0": "77c03c6a6374de910bf3c94a1751318ccc9f3453ae022ea3baa31d57f37dd5b7",
    "digits_a5_cnn_c01": "0a6a2c58795c06e7bb26ed7dc21b19478739e9a4b7ccbd510a3578c7354133d5",
    # MNIST (test-train split; the CNNs 1.6 MB each, 8.4 MB together): the models of the MNIST tables of docs/results.
    "mnist_cnn": "f574304fc2ed44f6247506e807b64340af6502568c57988383e354bc295eeebf",
    "mnist_cnn_adv": "3d48d672a8279ffe4606fcc6414e3f92b82d7db5bc6922e199782d5160bdfed4",
    "mnist_cnn_adv_l2": "8c157bac11e5961b5385dc3e313b7e717f02c3346a52325cb51095debe6d392f",
    "mnist_cnn_preempt": "5f2202d67777d2ea56c9adecab32245c555978911ee3f385e4c14c58ef027048",
    "mnist_cnn_preempt_l2": "9415593460b495953391511d7e6d4740484a925c391112285cfcc6486a91ae37",
    # A5's CROWN-IBP classifiers (a5_cnn_small, 3.3 MB each): docs/results/a5.md.
    "mnist_a5_cnn_c0": "94733c7050f4ba5d4159c1389b155f51a38b96df1a4a2c76c63a9cfc5147a52b",
    "mnist_a5_cnn_c01": "88747d9412e3f230c834fd54fad9490bdc57fffb89fd28f96d125595f2b4e19b",
    "mnist_a5_cnn_c03": "92331712e8d6647502159eb1e4b89a95202613eb3c11aaea67ab2386a822f8df",
}


def zoo_entry(name: str, description: str, spec: ZooSpec) -> None:
    spec = ZooSpec(**{**asdict(spec), "sha256": SHIPPED.get(name)})
    suffix = "shipped" if spec.shipped else "trained on first use"
    ZOO.register(name, f"{description} [{suffix}]")(lambda: spec)


def artifact_name(name: str, spec: ZooSpec) -> str:
    """The weights' file stem: entry name and recipe key."""
    return f"{name}-{spec.key()}"


def build(spec: ZooSpec, num_classes: int) -> torch.nn.Module:
    return MODELS.create(spec.arch, num_classes=num_classes, **spec.arch_kw)


def train_entry(name: str, spec: ZooSpec, data, device: torch.device | str = "cpu") -> dict:
    """Train the entry from its seed (the caller's generator is left as it was); returns the state dict."""
    make_batch = RECIPES.create(spec.recipe, **spec.recipe_kw)
    with torch.random.fork_rng(devices=[]), torch_threads(TRAIN_THREADS):
        torch.manual_seed(spec.seed)
        model = build(spec, data.num_classes).to(device)
        fit(model, data.x, data.y, make_batch, epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size,
            seed=spec.seed, desc=f"training {name} (first use, cached)")
    return {k: v.cpu() for k, v in model.state_dict().items()}


def load_zoo(name: str, device: torch.device | str = "cpu", *, data_dir: str | None = None) -> torch.nn.Module:
    """The trained model ``name``: shipped, cached, or trained now (and cached atomically).

    ``data_dir`` is where the entry's training data lies, for datasets that are not embedded (MNIST); the files
    are checked against their published MD5, so the folder is not part of the key.
    """
    spec: ZooSpec = ZOO.create(name)
    data = load(spec.dataset, spec.split, data_dir)
    state, _ = load_or_train(artifact_name(name, spec), lambda: train_entry(name, spec, data, device),
                             sha256=spec.sha256)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; the caller's generator is kept
        model = build(spec, data.num_classes)
    model.load_state_dict(state)
    return model.to(device).eval()


zoo_entry("digits_cnn", "small CNN, standard training on digits (non-robust)",
          ZooSpec("digits", "small_cnn", "standard", epochs=15, arch_kw={"image_size": 8}))
zoo_entry("digits_cnn_adv", "small CNN, PGD-5 Linf adversarial training (eps 0.1) on digits: the embedded default",
          ZooSpec("digits", "small_cnn", "pgd", epochs=15, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "linf", "eps": 0.1, "steps": 5}))
zoo_entry("digits_cnn_adv_l2", "small CNN, PGD-5 L2 adversarial training (eps 0.5) on digits",
          ZooSpec("digits", "small_cnn", "pgd", epochs=15, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "l2", "eps": 0.5, "steps": 5}))
zoo_entry("digits_cnn_gauss", "small CNN, Gaussian data augmentation (sigma 0.25; Cohen et al. 2019) on digits: base of smoothing",
          ZooSpec("digits", "small_cnn", "gaussian", epochs=15, arch_kw={"image_size": 8}, recipe_kw={"sigma": 0.25}))
zoo_entry("digits_cnn_gauss01", "small CNN, Gaussian data augmentation (sigma 0.1) on digits: base of the empirical smoothing table (preemptive paper, Table 5)",
          ZooSpec("digits", "small_cnn", "gaussian", epochs=15, arch_kw={"image_size": 8}, recipe_kw={"sigma": 0.1}))
# Preemptively robust training (Algorithm 2) needs 30 epochs on digits: at the 15 of digits_cnn_adv it had not left
# the initial plateau (clean 81% Linf, 42% L2 on the first 100 test images); the _e30 ADV entries are its fair baseline.
zoo_entry("digits_cnn_preempt", "small CNN, preemptively robust training (Moon et al. 2022, Alg. 2; L=1, K=5, Linf eps=delta=0.1, 30 epochs) on digits",
          ZooSpec("digits", "small_cnn", "preempt-robust", epochs=30, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "linf", "eps": 0.1, "steps": 5}))
zoo_entry("digits_cnn_preempt_l2", "small CNN, preemptively robust training (Moon et al. 2022, Alg. 2; L=1, K=5, L2 eps=delta=0.5, 30 epochs) on digits",
          ZooSpec("digits", "small_cnn", "preempt-robust", epochs=30, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "l2", "eps": 0.5, "steps": 5}))
zoo_entry("digits_cnn_adv_e30", "small CNN, PGD-5 Linf adversarial training (eps 0.1), 30 epochs, on digits (baseline of digits_cnn_preempt)",
          ZooSpec("digits", "small_cnn", "pgd", epochs=30, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "linf", "eps": 0.1, "steps": 5}))
zoo_entry("digits_cnn_adv_l2_e30", "small CNN, PGD-5 L2 adversarial training (eps 0.5), 30 epochs, on digits (baseline of digits_cnn_preempt_l2)",
          ZooSpec("digits", "small_cnn", "pgd", epochs=30, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "l2", "eps": 0.5, "steps": 5}))
zoo_entry("digits_cnn_sfgsm_adv", "small CNN, safe-spot-aware adversarial training with S-FGSM (safe-spot paper, sec. 3.5; "
                                  "Linf eps=delta=0.1, PGD-5) on digits: S-FGSM+ADV",
          ZooSpec("digits", "small_cnn", "s-fgsm+adv", epochs=15, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "linf", "eps": 0.1, "steps": 5}))
zoo_entry("digits_cnn_spgd_adv", "small CNN, safe-spot-aware adversarial training with S-PGD (safe-spot paper, sec. 3.5; "
                                 "10-step search, Linf eps=delta=0.1, PGD-5) on digits: S-PGD+ADV",
          ZooSpec("digits", "small_cnn", "s-pgd+adv", epochs=15, arch_kw={"image_size": 8},
                  recipe_kw={"norm": "linf", "eps": 0.1, "steps": 5, "search_steps": 10}))

# A5's legacy classifiers (Frosio & Kautz 2023, Table 2) at digits scale: a5_cnn_small trained by CROWN-IBP
# (``defenses.a5.train_crown_ibp``, recipe ``crown-ibp``) at eps_A^C = 0 (natural loss only: the unprotected C) and
# 0.1, on the digits schedule of 1437 training images (batches of 50, 60 epochs, eps ramp over epochs 3-17 of
# auto_LiRPA's SmoothedScheduler with mid 0.3, RMSprop lr 2e-3 dropped 10x at epochs 40 and 52); the paper's:
# 100 epochs, ramp 3-20, lr 1e-3 at 25 and 42, batches of 100.  The same training, seed and weights as the former
# a5_tables.py.  The A5 tables: reports/grids/a5_digits.toml.
for _sfx, _eps in (("c0", 0.0), ("c01", 0.1)):
    zoo_entry(f"digits_a5_cnn_{_sfx}", f"A5 classifier a5_cnn_small, CROWN-IBP training at Linf eps_A^C = {_eps:g} "
                                       "(Frosio & Kautz 2023, Table 2; 60 epochs) on digits",
              ZooSpec("digits", "a5_cnn_small", "crown-ibp", epochs=60, arch_kw={"image_size": 8},
                      recipe_kw={"eps": _eps, "start": 3, "length": 15, "mid": 0.3, "milestones": (40, 52)},
                      lr=2e-3, batch_size=50))

# A5's legacy MNIST classifiers (Frosio & Kautz 2023, Table 2), a5_cnn_small trained by CROWN-IBP on
# ``test-train`` (the first 8,000 MNIST test images: only the test set ships), evaluated on ``test-holdout``;
# batches of 100, RMSprop lr 1e-3, eps ramp over epochs 3-20 (auto_LiRPA's SmoothedScheduler, mid 0.3), as the
# paper.  The paper trains 100 epochs with lr drops at 25 and 42; at about 2.8 CPU-minutes per epoch for eps > 0
# (one thread) that is 4.7 CPU-hours each, so c01 and c03 run a 30-epoch schedule (drops at 25 and 28): their first
# 25 epochs are the paper's, epoch for epoch.  c0 (natural loss only) runs the paper's 100 epochs.  Resumable: an
# interrupted training goes on from its last epoch.  The A5 MNIST tables: docs/results/a5.md.
for _sfx, _eps, _epochs, _drops in (("c0", 0.0, 100, (25, 42)), ("c01", 0.1, 30, (25, 28)), ("c03", 0.3, 30, (25, 28))):
    zoo_entry(f"mnist_a5_cnn_{_sfx}", f"A5 classifier a5_cnn_small, CROWN-IBP training at Linf eps_A^C = {_eps:g} "
                                      f"(Frosio & Kautz 2023, Table 2; {_epochs} epochs), MNIST test-train split",
              ZooSpec("mnist", "a5_cnn_small", "crown-ibp", epochs=_epochs, arch_kw={"image_size": 28},
                      recipe_kw={"eps": _eps, "start": 3, "length": 17, "mid": 0.3, "milestones": _drops},
                      split="test-train", lr=1e-3, batch_size=100))

# The lecture's adversarial-training family (defenses/adversarial_training/) at the digits budget, 15 epochs as
# digits_cnn_adv (docs/results/training.md; trained on first use, not shipped).
for _recipe, _kw, _text in (("fgsm", {}, "FGSM-AT (Goodfellow et al. 2015; alpha 0.5, no random init)"),
                            ("fast", {}, "Fast-AT (Wong et al. 2020; uniform start, step 1.25 eps)"),
                            ("free", {"m": 5}, "Free-AT (Shafahi et al. 2019; m = 5)"),
                            ("trades", {}, "TRADES (Zhang et al. 2019; beta 6)")):
    zoo_entry(f"digits_cnn_{_recipe}", f"small CNN, {_text}, Linf eps 0.1, on digits",
              ZooSpec("digits", "small_cnn", _recipe, epochs=15, arch_kw={"image_size": 8},
                      recipe_kw={"norm": "linf", "eps": 0.1, **_kw}))

# MNIST (``--data-dir`` with the official t10k idx files): trained on ``test-train`` (the first 8,000 test images),
# evaluated on ``test-holdout`` (the last 2,000), since only the MNIST test images ship with ../shared/data.
# The dataset's default budgets, Linf 0.3 and L2 2.0; PGD-10 of eps/4.  From a random initialisation, adversarial
# training at Linf 0.3 stays at chance with this CNN unless the budget warms up, so it ramps linearly over the
# first 3 epochs (190 batches; ``recipes.eps_ramp``).  Width 16 (a quarter of the width-32 cost) keeps CPU
# training to minutes.  Algorithm 2 (``preempt-robust``) trains on PGD examples of x_r, up to eps + delta = 2 eps
# from x_o (0.6 Linf, 4.0 L2 here): with the ADV schedule (8 epochs, 3-epoch ramp) it reached only 94.9% clean /
# 39.8% PGD-20 (Linf) and stayed at chance (L2) on 1,000 holdout images, so it ramps over 10 of 15 epochs.
# Seed 1 for the Linf entry: from seed 0, Algorithm 2's training stayed at chance on the CPU that trained the shipped
# weights (11.50% clean on test-holdout; training is not bit-reproducible across CPUs, and this one's rounding took
# another path than the machine of the earlier tables, which reached 96.5% from seed 0); seed 1 reaches 97.6%.
PREEMPT_SEED = {"linf": 1, "l2": 0}
for _norm, _eps in (("linf", 0.3), ("l2", 2.0)):
    _sfx = "" if _norm == "linf" else "_l2"
    _kw = {"norm": _norm, "eps": _eps, "steps": 10, "ramp": 190}
    zoo_entry(f"mnist_cnn_adv{_sfx}", f"small CNN (width 16), PGD-10 {_norm} adversarial training (eps {_eps}, ramped), "
                                      "MNIST test-train split",
              ZooSpec("mnist", "small_cnn", "pgd", epochs=8, arch_kw={"image_size": 28, "width": 16}, recipe_kw=_kw,
                      split="test-train", lr=0.05))
    zoo_entry(f"mnist_cnn_preempt{_sfx}", f"small CNN (width 16), preemptively robust training (Alg. 2; L=1, K=10, {_norm} "
                                          f"eps=delta={_eps}, ramped over 10 epochs, 15 epochs), MNIST test-train split",
              ZooSpec("mnist", "small_cnn", "preempt-robust", epochs=15, arch_kw={"image_size": 28, "width": 16},
                      recipe_kw={**_kw, "ramp": 630}, split="test-train", lr=0.05, seed=PREEMPT_SEED[_norm]))
zoo_entry("mnist_cnn", "small CNN (width 16), standard training (non-robust), MNIST test-train split: NRP's feature "
                       "extractor on MNIST",
          ZooSpec("mnist", "small_cnn", "standard", epochs=8, arch_kw={"image_size": 28, "width": 16},
                  split="test-train", lr=0.05))
