"""Training, caching and loading of the purifiers (HGD, NRP, JATP), and the shared preprocessor class.

``train_purifier(name, target_model, data, epochs)`` is the one training loop (the CLI's ``harness train
--defense NAME`` is meant to call it).  Each method module (``hgd``, ``nrp``, ``jatp``) registers a
``Method`` here: how to build its network, how to craft its training inputs (offline pool, oblivious SSP,
or full adversarial examples), its loss, its digits defaults (train on the CPU in about a minute) and its
paper's settings as a preset (documented, not run).

A defense built with ``checkpoint=None`` trains on first use, deterministically for its settings, on the
training split of ``dataset`` against the zoo model ``target``, and caches the weights under
``$HARNESS_CACHE`` keyed by a hash of the method, its settings, the target's zoo key and the torch version, or
takes the shipped weights recorded in ``SHIPPED`` (``harness.artifacts.load_or_train``, as the zoo does); weights
are only ever read with ``torch.load(weights_only=True)``.

Layout: this module holds the loading, training on first use and caching (``load_or_train``, ``build_purifier``,
``SHIPPED``) and re-exports the rest: ``features`` (feature taps and the feature-distortion attack), ``methods``
(``Method``, ``METHODS``), ``loop`` (``train_purifier``, ``parse_settings``, ``train_to_file``) and ``preprocessor``
(``weights_digest``, ``frozen_eval``); ``PurifierDefense``, the defense the registered purifiers build, is here, with
what ``harness train --defense NAME --target-model M`` calls (``PurifierDefense.train_for_target``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.core.artifacts import cache_key as artifact_key
from harness.core.artifacts import load_or_train as load_artifact
from harness.core.capabilities import Approximates, Randomized, TrainsForTarget
from harness.core.defense import Preprocessor
from harness.core.errors import UsageError
from harness.core.registry import ZOO
from harness.data import load
from harness.models.checkpoint import load_checkpoint
from harness.models.zoo import ZooSpec, load_zoo

from .features import Features, feature_attack, per_sample_mse
from .loop import build_net, parse_settings, train_purifier, train_to_file
from .methods import METHODS, Context, Method, get_method, presets, register_method
from .preprocessor import frozen_eval, weights_digest

__all__ = ["METHODS", "SHIPPED", "Context", "DynamicPurifier", "Features", "Method", "PurifierDefense", "build_net", "build_purifier",
           "cache_key", "default_train_eps", "feature_attack", "frozen_eval", "get_method", "load_or_train",
           "parse_settings", "per_sample_mse", "presets", "register_method", "standard_model", "train_purifier",
           "train_to_file", "training_data", "weights_digest"]

# The sha256 of each shipped purifier (artifact name -> digest; ``harness/weights/<name>.pt``): the digits purifiers
# of docs/results (HGD, HGD-full, NRP, JATP, JATP-obl against digits_cnn_adv), trained with torch 2.13.0 on one
# CPU thread; and the MNIST HGD and NRP of docs/results/purifiers.md (against mnist_cnn_adv, Linf 0.3, on test-train;
# NRP's feature network mnist_cnn).  MNIST's JATP is not shipped yet (trained on first use).
SHIPPED: dict[str, str] = {
    "purifier-hgd-digits_cnn_adv-0ae8df714b22": "313c80de0bb47f2a7c1e34dee0bbca21416752d2ea32ec82f5815aa3ad7806e7",
    "purifier-hgd-digits_cnn_adv-c7280f50b759": "ab2ae90382d6b51b5442f63a5595410756e747118eb6ce0016c6274497ce3c48",
    "purifier-hgd-mnist_cnn_adv-999b228b97b3": "82d63b4f0941fbbd5aeca250be5514be447da6a8d693300d2f5058397e041a0b",
    "purifier-jatp-digits_cnn_adv-022ecd97e3c7": "c93cf716383db08a49e561b390cdb692808b7adde768f922f5c4995e71b58c57",
    "purifier-jatp-digits_cnn_adv-81673ece52f0": "02f74d759ed9ee2bb59a4a7f59aaa26ed020d70c94c7907a113d1265488a381f",
    "purifier-jatp-mnist_cnn_adv-123bc4b259c2": "382a4c3a0924ee668e9b863a14f1b64089be8bee7fb1ae7b1fe107c998481cca",
    "purifier-nrp-digits_cnn_adv-e494e80acbfc": "840eafa93453d85f2c650936ea62193e9f36e1cf0a703d4d9476c46081db5d16",
    "purifier-nrp-mnist_cnn_adv-d7f6b4c0ce76": "85ecd6f69bae58dc8ad89e862c77cad5f3df4a4098b2d8bff827149a8f636211",
}


def cache_key(name: str, cfg: dict, target: str, dataset: str, extra: dict | None = None) -> str:

    spec: ZooSpec = ZOO.create(target)
    return artifact_key({"method": name, "cfg": cfg, "target": target, "target_key": spec.key(), "dataset": dataset,
                         "extra": extra or {}})


def training_data(target: str, dataset: str | None = None, split: str | None = None) -> tuple[str, str]:
    """(dataset, split) a purifier for the zoo model ``target`` trains on: by default the target's own.

    The MNIST zoo models train on ``test-train``; a purifier trained on MNIST's full ``test`` split would
    have seen the ``test-holdout`` images it is evaluated on.  A dataset other than the target's uses its
    ``train`` split unless ``split`` says otherwise.
    """

    if target not in ZOO:
        ZOO.get(target)  # unknown: fails with the closest names
    spec = ZOO.create(target)
    dataset = dataset or spec.dataset
    return dataset, split or (spec.split if dataset == spec.dataset else "train")


def default_train_eps(target: str, dataset: str | None = None, data_dir: str | None = None) -> float:
    """A purifier's training budget when none is given: the Linf budget of its training data (digits 0.1,
    MNIST 0.3), so that it learns to remove perturbations of the size it will face."""

    return float(load(training_data(target, dataset)[0], "test", data_dir).default_eps["linf"])


def standard_model(dataset: str) -> str | None:
    """The zoo's standard-trained (non-robust) CNN of ``dataset`` (NRP's fixed feature network), if any."""

    name = f"{dataset}_cnn"
    return name if name in ZOO and ZOO.create(name).recipe == "standard" else None


def _load_target(target: str, data_dir: str | None = None) -> nn.Module:

    if target not in ZOO:
        ZOO.get(target)  # unknown: fails with the closest names
    return load_zoo(target, "cpu", data_dir=data_dir)


def load_or_train(name: str, cfg: dict, *, target: str, dataset: str, checkpoint: str | None,
                  feature_model: str | None = None, split: str = "train",
                  data_dir: str | None = None) -> tuple[nn.Module, str]:
    """The purifier network: from ``checkpoint`` (weights_only), else from the cache, else trained now.

    Training uses ``split`` of ``dataset`` (read from ``data_dir`` when it is not embedded).  Returns
    (network in eval mode without parameter gradients, where the weights came from).  The global RNG is
    left as it was (building and loading models draws initial weights from it).
    """
    with torch.random.fork_rng(devices=[]):
        return _load_or_train(name, cfg, target=target, dataset=dataset, checkpoint=checkpoint,
                              feature_model=feature_model, split=split, data_dir=data_dir)


def _load_or_train(name: str, cfg: dict, *, target: str, dataset: str, checkpoint: str | None,
                   feature_model: str | None, split: str, data_dir: str | None) -> tuple[nn.Module, str]:
    method = get_method(name)
    cfg = {**method.defaults, **cfg}

    if checkpoint is not None:

        net = build_net(name, load(dataset, "test", data_dir).x.shape[1], cfg)
        net = load_checkpoint(net, checkpoint, f"{name} purifier ({_arch_text(name, cfg)})")
        source = str(checkpoint)
    else:

        feature_key = ZOO.create(feature_model).key() if feature_model and feature_model in ZOO else None
        extra = {"feature_model": feature_model, **({"feature_key": feature_key} if feature_key else {})}
        if split != "train":  # absent for "train", so the keys of caches made before splits existed still hold
            extra["split"] = split
        artifact = f"purifier-{name}-{target}-{cache_key(name, cfg, target, dataset, extra)}"
        data = load(dataset, split, data_dir)
        net = build_net(name, data.x.shape[1], cfg)

        def train() -> dict:
            target_model = _load_target(target, data_dir)
            feat = _load_target(feature_model, data_dir) if feature_model else None
            train_purifier(name, target_model, data, net=net, feature_model=feat, **cfg)
            return net.state_dict()

        state, source = load_artifact(artifact, train, sha256=SHIPPED.get(artifact))
        net.load_state_dict(state)
    return frozen_eval(net), source


class PurifierDefense(Preprocessor, Approximates, TrainsForTarget):
    """A trained purifier P in front of the fixed classifier: classify = model(P(x)), P(x) clamped to [0, 1].

    ``describe()`` gives the settings and a digest of the weights, so run.json pins the exact
    purifier.  NRP's dynamic inference is ``DynamicPurifier``.
    """

    receives = ("dataset", "data_dir", "target")  # the run's (harness.core.defense.RunContext)

    @classmethod
    def train_for_target(cls, name: str, out: str | Path, *, target: str | None, arch: str | None, dataset: str,
                         split: str | None, data_dir: str | None, epochs: int | None, device,
                         settings: dict[str, str], load_target: Callable[..., tuple[nn.Module, str]]) -> str:
        """Train the purifier ``name`` for the classifier ``target`` (a zoo name, or a checkpoint of ``arch``) and
        save it at ``out`` (``harness train --defense NAME --target-model M``); returns the ``harness run``
        arguments that use the file.

        The training data is the zoo target's own (``training_data``), else ``split`` (default train) of
        ``dataset``.  ``settings``: the ``--set`` strings (``epochs`` among them is ``epochs``).  Without
        ``train_eps`` the budget is the dataset's Linf one, in steps of a quarter of it where the method takes a
        step size (as the defenses' own default).  ``load_target(data)`` -> (classifier, its name).
        """
        from harness.models import zoo  # looked up when called (tests stand in a fake load_zoo)

        if epochs is not None and epochs <= 0:
            raise UsageError("--epochs must be positive")
        zoo_target = arch is None and target in ZOO
        data = load(dataset, split or (training_data(target, dataset)[1] if zoo_target else "train"), data_dir)
        settings = parse_settings(name, settings)
        if "train_eps" not in settings:
            settings["train_eps"] = float(data.default_eps["linf"])
            if "train_step_size" in get_method(name).defaults:
                settings.setdefault("train_step_size", settings["train_eps"] / 4)
        if "epochs" in settings:  # --set epochs=N is --epochs N
            if epochs is not None and epochs != settings["epochs"]:
                raise UsageError(f"--epochs {epochs} and --set epochs={settings['epochs']} disagree; give one")
            epochs = settings.pop("epochs")
        target_model, target_name = load_target(data)
        feature = standard_model(dataset) if get_method(name).feature_net else None  # as the defense's default
        feature_model = zoo.load_zoo(feature, device, data_dir=data_dir) if feature else None
        train_to_file(name, target_model, data, out, epochs=epochs, feature_model=feature_model, **settings)
        return f"--model {target_name} --defense {name} --set {name}.checkpoint={out}"

    def __init__(self, name: str, net: nn.Module, params: dict, source: str = ""):
        super().__init__()
        self.net = net
        self._name, self._source = name, source
        self._params = {**params, "weights": weights_digest(net)}
        self.eval()

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0, 1)

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """BPDA's differentiable surrogate (``bpda --set backward=approx``): the network without the clamp.

        The clamp to [0, 1] has a zero gradient wherever P's raw output leaves the box (about half the
        pixels of the digits' black background); the surrogate passes the gradient straight through it.
        """
        return self.net(x)

    def describe(self) -> dict:
        return dict(self._params)

    def extra_repr(self) -> str:
        return f"{self._name}, weights from {self._source}"


class DynamicPurifier(PurifierDefense, Randomized):
    """NRP's dynamic inference (``nrp --set dynamic=true``; official ``purify.py --dynamic``):
    P(clip_[0,1](x + clip_[-dyn_eps, dyn_eps](N(0, dyn_sigma^2)))), fresh noise in each ``purify``: a random
    preprocessor, to be attacked with EOT."""

    def __init__(self, name: str, net: nn.Module, params: dict, source: str = "", dyn_sigma: float = 0.05,
                 dyn_eps: float = 16 / 255):
        super().__init__(name, net, params, source)
        self.dyn_sigma, self.dyn_eps = float(dyn_sigma), float(dyn_eps)
        self._params.update(dynamic=True, dyn_sigma=self.dyn_sigma, dyn_eps=self.dyn_eps)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        noise = (torch.randn_like(x) * self.dyn_sigma).clamp(-self.dyn_eps, self.dyn_eps)
        return super().purify((x + noise).clamp(0, 1))


def build_purifier(name: str, cfg: dict, *, target: str, dataset: str | None, train_split: str | None,
                   checkpoint: str | None, data_dir: str | None, feature_model: str | None = None,
                   dynamic: bool = False) -> PurifierDefense:
    """The registered purifier defenses' common body: resolve the training data, load or train P, describe it.

    ``feature_model="standard"`` (NRP) is the zoo's standard-trained CNN of the training dataset.
    ``data_dir`` is left out of the description (it names a folder, not a setting).
    """
    dataset, split = training_data(target, dataset, train_split)
    if feature_model == "standard":
        feature_model = standard_model(dataset)
        if feature_model is None:
            raise UsageError(f"{name}: the zoo has no standard-trained model of {dataset}; set feature_model to a "
                             f"zoo name (or empty for the target)")
    net, source = load_or_train(name, cfg, target=target, dataset=dataset, checkpoint=checkpoint,
                                feature_model=feature_model, split=split, data_dir=data_dir)
    params = {"checkpoint": checkpoint, "target": None if checkpoint else target,
              **({"feature_model": None if checkpoint else feature_model} if get_method(name).feature_net else {}),
              "dataset": dataset, "train_split": split, **cfg}
    return DynamicPurifier(name, net, params, source) if dynamic else PurifierDefense(name, net, params, source)


def _arch_text(name: str, cfg: dict) -> str:
    keys = [k for k in ("nf", "nb", "gc", "enc_channels", "dec_channels") if k in cfg]
    return ", ".join(f"{k}={cfg[k]}" for k in keys)
