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
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from harness.core.artifacts import TRAIN_THREADS, atomic_save
from harness.core.artifacts import cache_key as artifact_key
from harness.core.artifacts import load_or_train as load_artifact
from harness.core.defense import Preprocessor
from harness.core.errors import UsageError
from harness.core.geometry import project, random_in_ball
from harness.core.registry import ZOO, parse_number
from harness.data import load
from harness.models.checkpoint import load_checkpoint
from harness.models.zoo import ZooSpec, load_zoo

# The sha256 of each shipped purifier (artifact name -> digest; ``harness/weights/<name>.pt``): the digits purifiers
# of the README's table (HGD, HGD-full, NRP, JATP, JATP-obl against digits_cnn_adv), trained with torch 2.13.0 on one
# CPU thread.  The MNIST purifiers are not shipped (trained on first use).
SHIPPED: dict[str, str] = {
    "purifier-hgd-digits_cnn_adv-0ae8df714b22": "313c80de0bb47f2a7c1e34dee0bbca21416752d2ea32ec82f5815aa3ad7806e7",
    "purifier-hgd-digits_cnn_adv-c7280f50b759": "ab2ae90382d6b51b5442f63a5595410756e747118eb6ce0016c6274497ce3c48",
    "purifier-jatp-digits_cnn_adv-022ecd97e3c7": "c93cf716383db08a49e561b390cdb692808b7adde768f922f5c4995e71b58c57",
    "purifier-jatp-digits_cnn_adv-81673ece52f0": "02f74d759ed9ee2bb59a4a7f59aaa26ed020d70c94c7907a113d1265488a381f",
    "purifier-nrp-digits_cnn_adv-e494e80acbfc": "840eafa93453d85f2c650936ea62193e9f36e1cf0a703d4d9476c46081db5d16",
}

# --------------------------------------------------------------------------------------------- features


class Features:
    """One forward pass of ``model`` giving (logits, the output of the submodule named ``layer``).

    ``layer="logits"`` taps the output itself (HGD's "LGD"); a module path such as ``"features"`` (the
    small CNN's top feature map, HGD's "FGD") or ``"features.5"`` (its third conv) taps that module.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.model, self.layer = model, layer
        if layer not in ("logits", "output"):
            try:
                self.module = model.get_submodule(layer)
            except AttributeError:
                names = [n for n, _ in model.named_modules() if n][:12]
                raise UsageError(f"the model has no layer {layer!r} to take features from; "
                                 f"use 'logits' or one of {', '.join(names)}") from None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layer in ("logits", "output"):
            out = self.model(x)
            return out, out
        box = []
        handle = self.module.register_forward_hook(lambda m, i, o: box.append(o))
        try:
            out = self.model(x)
        finally:
            handle.remove()
        return out, box[-1]


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per sample (the d(.) of JATP eq. 8 and NRP's feature distortion)."""
    return (a - b).pow(2).flatten(1).mean(1)


def feature_attack(feat: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int,
                   step_size: float, init: str = "uniform") -> torch.Tensor:
    """Linf sign ascent of the feature distortion sum_i MSE(feat(x'_i), feat(x_i)) within B_eps(x) ∩ [0,1].

    NRP's SSP (Naseer et al. 2020, eq. 3) with ``feat`` = a fixed feature network, and JATP's full
    adversarial examples (Zhou et al. 2021, eq. 5) with ``feat`` = an internal layer of the full model T∘P.
    ``init``: "uniform" (U(-eps, eps)), "randn" (x + N(0, 1) projected, as NRP's ssp.py) or "none".
    """

    x = x.detach()
    with torch.no_grad():
        ref = feat(x)
    if init == "uniform":
        x_adv = (x + random_in_ball(x, "linf", eps)).clamp(0, 1)
    elif init == "randn":
        x_adv = project(x + torch.randn_like(x), x, "linf", eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        xa = x_adv.detach().requires_grad_(True)
        loss = per_sample_mse(feat(xa), ref).sum()
        (g,) = torch.autograd.grad(loss, xa)
        x_adv = project(xa.detach() + step_size * g.sign(), x, "linf", eps)
    return x_adv.detach()


# --------------------------------------------------------------------------------------------- methods


@dataclass
class Context:
    """What a method's crafting and loss functions see during training."""

    net: nn.Module            # the purifier P being trained
    target: nn.Module         # the fixed target classifier T (eval mode, no parameter gradients)
    cfg: dict
    feature_net: nn.Module | None = None  # NRP's fixed feature extractor (VGG in the paper)


@dataclass
class Method:
    name: str
    build: Callable[[int, dict], nn.Module]                      # (in_channels, cfg) -> purifier network
    defaults: dict                                               # digits, CPU, about a minute
    paper: dict                                                  # the paper's settings (documented, not run)
    craft: Callable[[Context, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]   # (ctx, x_in, x, y)
    loss: Callable[[Context, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]
    pool: Callable[[Context, torch.Tensor, torch.Tensor], tuple] | None = None  # offline inputs (HGD)
    feature_net: bool = False  # trains against a fixed feature network (NRP's VGG role), by default ``standard_model``


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:

    if name not in METHODS:
        raise UsageError(f"unknown purifier {name!r}; one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def presets() -> dict[str, dict[str, dict]]:
    """{"digits": {method: settings}, "paper": {method: the paper's CIFAR-10 / ImageNet settings}}."""

    return {"digits": {n: dict(m.defaults) for n, m in METHODS.items()},
            "paper": {n: dict(m.paper) for n, m in METHODS.items()}}


# --------------------------------------------------------------------------------------------- training


def _optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg.get("weight_decay", 0.0))
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    raise UsageError(f"optimizer must be sgd or adam, got {cfg['optimizer']!r}")


def train_purifier(name: str, target_model: nn.Module, data, epochs: int | None = None, *,
                   net: nn.Module | None = None, feature_model: nn.Module | None = None, quiet: bool = True,
                   log: list | None = None, **settings) -> nn.Module:
    """Train the purifier ``name`` (hgd | nrp | jatp) in front of the fixed ``target_model``; returns P (eval).

    ``data``: an ImageSet or (x, y) of training images in [0, 1].  ``epochs`` and ``settings`` override the
    method's digits defaults (``presets()["digits"][name]``).  ``feature_model``: NRP's feature extractor
    (default: the target).  Deterministic for its settings (``seed``) on a given machine: the global RNG
    is forked, so the caller's random state is left as it was.  ``log``: a list that receives one dict of
    mean loss terms per epoch.  The target's parameters are not updated (eval mode, no gradients).
    """
    method = get_method(name)
    unknown = [k for k in settings if k not in method.defaults]
    if unknown:
        raise UsageError(f"{name} has no training setting {unknown[0]!r}; it takes: {', '.join(method.defaults)}")
    cfg = {**method.defaults, **settings}
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    target_model = target_model.eval()
    frozen = [p for p in target_model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        if net is None:
            net = build_net(name, x.shape[1], cfg)
        net = net.to(next(target_model.parameters()).device)
        ctx = Context(net, target_model, cfg, feature_model.eval() if feature_model is not None else None)
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"] + 1)
            torch.set_num_threads(TRAIN_THREADS)
            try:
                _fit(method, ctx, x, y, quiet, log)
            finally:
                torch.set_num_threads(threads)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return net.eval()


def build_net(name: str, in_channels: int, cfg: dict) -> nn.Module:
    """The untrained network of method ``name``, initialised from ``cfg["seed"]`` (global RNG left as it was)."""
    method = get_method(name)
    cfg = {**method.defaults, **cfg}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        return method.build(in_channels, cfg)


def _fit(method: Method, ctx: Context, x: torch.Tensor, y: torch.Tensor, quiet: bool, log: list | None) -> None:
    cfg, net = ctx.cfg, ctx.net
    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(cfg["seed"])
    net.eval()
    if method.pool is not None:  # offline training inputs (HGD): a static set crafted once
        x_in, x_clean, y_all = method.pool(ctx, x.to(device), y.to(device))
    else:
        x_in, x_clean, y_all = x, x, y
    opt = _optimizer(net.parameters(), cfg)
    epochs, bs = cfg["epochs"], cfg["batch_size"]
    steps_per_epoch = (len(x_in) + bs - 1) // bs
    milestones = [round(f * epochs) * steps_per_epoch for f in cfg.get("milestones", ())]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.get("gamma", 0.1))
    bar = tqdm(range(epochs), desc=f"training {method.name} purifier (first use, cached)", disable=quiet, leave=False)
    for _ in bar:
        perm = torch.randperm(len(x_in), generator=gen)
        sums: dict[str, float] = {}
        for i in range(0, len(x_in), bs):
            idx = perm[i:i + bs]
            xin, xb, yb = x_in[idx].to(device), x_clean[idx].to(device), y_all[idx].to(device)
            net.eval()
            xt = method.craft(ctx, xin, xb, yb).detach()
            net.train()
            loss, terms = method.loss(ctx, xt, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in {"loss": loss.detach(), **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        means = {k: v / len(x_in) for k, v in sums.items()}
        if log is not None:
            log.append(means)
        bar.set_postfix(loss=f"{means['loss']:.4f}")
    net.eval()


def parse_settings(name: str, pairs: dict[str, str]) -> dict:
    """``{"epochs": "3", "mode": "obl", "milestones": "0.5,0.8"}`` -> typed training settings of ``name``.

    Types follow the method's digits defaults (for ``harness train --defense NAME --set key=value``).
    """

    defaults, out = get_method(name).defaults, {}
    for key, text in pairs.items():
        if key not in defaults:
            raise UsageError(f"{name} has no training setting {key!r}; it takes: {', '.join(defaults)}")
        d = defaults[key]
        try:
            if isinstance(d, bool):
                out[key] = text.lower() in ("1", "true", "yes", "on")
            elif isinstance(d, int):
                out[key] = int(text)
            elif isinstance(d, float):
                out[key] = parse_number(text)
            elif isinstance(d, tuple):
                out[key] = tuple(t if isinstance(d[0], str) else
                                 (int(t) if isinstance(d[0], int) else parse_number(t)) for t in text.split(",") if t)
            else:
                out[key] = text
        except (ValueError, ZeroDivisionError, IndexError):
            raise UsageError(f"{name} setting {key} expects {type(d).__name__}, got {text!r}") from None
    return out


def train_to_file(name: str, target_model: nn.Module, data, out: str | Path, epochs: int | None = None,
                  feature_model: nn.Module | None = None, quiet: bool = False, **settings) -> dict:
    """Train and save P's state dict atomically at ``out`` (+ ``out.json`` with the settings); returns them.

    Load it with ``--defense NAME --set checkpoint=OUT`` (plus the same network sizes, e.g. nf/nb/gc).
    """
    net = train_purifier(name, target_model, data, epochs, feature_model=feature_model, quiet=quiet, **settings)
    out = Path(out)
    atomic_save(net.state_dict(), out)
    cfg = {**get_method(name).defaults, **settings, **({"epochs": int(epochs)} if epochs is not None else {})}
    meta = {"defense": name, "settings": cfg, "weights": weights_digest(net)}
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


# --------------------------------------------------------------------------------------------- caching


def weights_digest(net: nn.Module) -> str:
    """First 12 hex digits of SHA-256 over the state dict's names, shapes and bytes (goes in run.json)."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


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
    return load_zoo(target, "cpu", quiet=True, data_dir=data_dir)


def load_or_train(name: str, cfg: dict, *, target: str, dataset: str, checkpoint: str | None,
                  feature_model: str | None = None, split: str = "train", data_dir: str | None = None,
                  quiet: bool = True) -> tuple[nn.Module, str]:
    """The purifier network: from ``checkpoint`` (weights_only), else from the cache, else trained now.

    Training uses ``split`` of ``dataset`` (read from ``data_dir`` when it is not embedded).  Returns
    (network in eval mode without parameter gradients, where the weights came from).  The global RNG is
    left as it was (building and loading models draws initial weights from it).
    """
    with torch.random.fork_rng(devices=[]):
        return _load_or_train(name, cfg, target=target, dataset=dataset, checkpoint=checkpoint,
                              feature_model=feature_model, split=split, data_dir=data_dir, quiet=quiet)


def _load_or_train(name: str, cfg: dict, *, target: str, dataset: str, checkpoint: str | None,
                   feature_model: str | None, split: str, data_dir: str | None, quiet: bool) -> tuple[nn.Module, str]:
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
            train_purifier(name, target_model, data, net=net, feature_model=feat, quiet=quiet, **cfg)
            return net.state_dict()

        state, source = load_artifact(artifact, train, sha256=SHIPPED.get(artifact))
        net.load_state_dict(state)
    return frozen_eval(net), source


def build_purifier(name: str, cfg: dict, *, target: str, dataset: str | None, train_split: str | None,
                   checkpoint: str | None, data_dir: str | None, quiet: bool, feature_model: str | None = None,
                   dynamic: bool = False) -> "PurifierDefense":
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
                                feature_model=feature_model, split=split, data_dir=data_dir, quiet=quiet)
    params = {"checkpoint": checkpoint, "target": None if checkpoint else target,
              **({"feature_model": None if checkpoint else feature_model} if get_method(name).feature_net else {}),
              "dataset": dataset, "train_split": split, **cfg}
    return PurifierDefense(name, net, params, source, dynamic=dynamic)


def frozen_eval(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with no parameter gradients: a trained preprocessor as the defenses use it."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _arch_text(name: str, cfg: dict) -> str:
    keys = [k for k in ("nf", "nb", "gc", "enc_channels", "dec_channels") if k in cfg]
    return ", ".join(f"{k}={cfg[k]}" for k in keys)


# --------------------------------------------------------------------------------------------- defense


class PurifierDefense(Preprocessor):
    """A trained purifier P in front of the fixed classifier: classify = model(P(x)), P(x) clamped to [0, 1].

    ``describe()`` gives the settings and a digest of the weights, so run.json and the config hash pin
    the exact purifier.  ``dynamic`` (NRP's dynamic inference): P(clip_[0,1](Proj_{Linf dyn_eps}(x + N(0,
    dyn_sigma^2)))) - a random preprocessor (``randomized``), to be attacked with EOT.
    """

    def __init__(self, name: str, net: nn.Module, params: dict, source: str = "",
                 dynamic: bool = False, dyn_sigma: float = 0.05, dyn_eps: float = 16 / 255):
        super().__init__()
        self.net = net
        self._name, self._source = name, source
        self.dynamic, self.dyn_sigma, self.dyn_eps = bool(dynamic), float(dyn_sigma), float(dyn_eps)
        self.randomized = self.dynamic
        self._params = {**params, "weights": weights_digest(net)}
        if self.dynamic:
            self._params.update(dynamic=True, dyn_sigma=self.dyn_sigma, dyn_eps=self.dyn_eps)
        self.eval()

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            noise = (torch.randn_like(x) * self.dyn_sigma).clamp(-self.dyn_eps, self.dyn_eps)
            x = (x + noise).clamp(0, 1)
        return self.net(x).clamp(0, 1)

    has_approx = True

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
