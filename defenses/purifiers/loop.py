"""The one training loop of the purifiers (``defenses.purifiers.training``): ``train_purifier``, the untrained
network of a method (``build_net``), ``--set`` settings (``parse_settings``) and ``train_to_file`` for ``harness
train --defense NAME``."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from harness.core.artifacts import TRAIN_THREADS, atomic_save
from harness.core.errors import UsageError
from harness.core.registry import parse_number
from harness.core.training import train_epochs

from .methods import Context, Method, get_method
from .preprocessor import weights_digest


def _optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg.get("weight_decay", 0.0))
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    raise UsageError(f"optimizer must be sgd or adam, got {cfg['optimizer']!r}")


def train_purifier(name: str, target_model: nn.Module, data, epochs: int | None = None, *,
                   net: nn.Module | None = None, feature_model: nn.Module | None = None, log: list | None = None,
                   **settings) -> nn.Module:
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
                _fit(method, ctx, x, y, log)
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


def _fit(method: Method, ctx: Context, x: torch.Tensor, y: torch.Tensor, log: list | None) -> None:
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

    def step(idx):
        xin, xb, yb = x_in[idx].to(device), x_clean[idx].to(device), y_all[idx].to(device)
        net.eval()
        xt = method.craft(ctx, xin, xb, yb).detach()
        net.train()
        loss, terms = method.loss(ctx, xt, xb, yb)
        return loss, {k: torch.as_tensor(v) for k, v in terms.items()}

    train_epochs(len(x_in), step, opt, sched, epochs=epochs, batch_size=bs, gen=gen, keep={"purifier": net}, log=log,
                 desc=f"training {method.name} purifier (first use, cached)")
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
                  feature_model: nn.Module | None = None, **settings) -> dict:
    """Train and save P's state dict atomically at ``out`` (+ ``out.json`` with the settings); returns them.

    Load it with ``--defense NAME --set checkpoint=OUT`` (plus the same network sizes, e.g. nf/nb/gc).
    """
    net = train_purifier(name, target_model, data, epochs, feature_model=feature_model, **settings)
    out = Path(out)
    atomic_save(net.state_dict(), out)
    cfg = {**get_method(name).defaults, **settings, **({"epochs": int(epochs)} if epochs is not None else {})}
    meta = {"defense": name, "settings": cfg, "weights": weights_digest(net)}
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta
