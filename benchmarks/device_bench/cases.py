"""The device benchmark's cases: ``Bench`` (the models, images and clock of one run, and a method per case that
fills a row: PGD, AutoAttack, Algorithm 1, CERTIFY) and ``plan`` (the rows in table order, with their run order)."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.budget import Budget

from .configs import EPS, N0, SIGMA, Config
from .table import Row, count, fill
from .timing import Clock, interleaved, reason


class Autocast(nn.Module):
    """``model`` with its forward (and so its backward) under ``torch.autocast(dtype)``; logits in fp32."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype
        self.train(model.training)  # eval like the model: torchattacks restores the mode it finds on the wrapper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x)
        return out.float()


def frozen(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def perturbed(x: torch.Tensor) -> torch.Tensor:
    from harness.core.geometry import random_in_ball

    return (x + random_in_ball(x, "linf", EPS)).clamp(0, 1)


class Bench:
    """The models, images and timers of one run, and the cases that fill the table's rows."""

    def __init__(self, cfg: Config, device: torch.device, data_dir: Path):
        from harness.core.registry import MODELS
        from harness.plugins import load_builtins

        load_builtins()
        self.cfg, self.device, self.clock = cfg, device, Clock(device)
        torch.manual_seed(0)
        resnet = MODELS.create("resnet18")
        ckpt = _autoattack_checkpoint()
        if ckpt is not None:
            from harness.models.checkpoint import load_checkpoint

            resnet, self.resnet_label = load_checkpoint(resnet, str(ckpt), "resnet18"), "ResNet-18 (model_test.pt)"
        else:
            self.resnet_label = "ResNet-18 (random weights: model_test.pt not found)"
        self.resnet = frozen(resnet, device)
        self.wrn = frozen(MODELS.create(cfg.wrn, **cfg.wrn_kw), device)
        self.wrn_label = cfg.wrn_label
        self._compiled: dict[int, nn.Module] = {}
        self._images: dict[int, torch.Tensor] = {}
        self.data, self.data_note = _dataset(data_dir)

    # ------------------------------------------------------------------ inputs

    def batch(self, model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test images (or uniform noise) and the fp32 model's predictions as labels."""
        if n not in self._images:
            if self.data is not None and n <= len(self.data):
                self._images[n] = self.data.take(n).x  # decodes only these n
            else:
                self._images[n] = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        x = self._images[n].to(self.device)
        with torch.no_grad():
            y = torch.cat([model(c).argmax(1) for c in x.split(1024)])
        return x, y

    def variant(self, model: nn.Module, name: str) -> nn.Module:
        if name == "bf16":
            return Autocast(model, self.device.type)
        if name == "compiled":
            if id(model) not in self._compiled:
                self._compiled[id(model)] = torch.compile(model, dynamic=False).eval()
            return self._compiled[id(model)]
        return model

    # ------------------------------------------------------------------ cases

    def pgd(self, row: Row, base: nn.Module, variant: str, n: int) -> None:
        import torchattacks

        from attacks.pgd import PGD

        steps, alpha = self.cfg.pgd_steps, EPS / 4
        model = self.variant(base, variant)
        x, y = self.batch(base, n)
        x_floor = perturbed(x)
        out: dict[str, torch.Tensor] = {}

        def floor() -> None:
            xg = x_floor.clone().requires_grad_(True)
            for _ in range(steps):
                torch.autograd.grad(model(xg).sum(), xg)

        def ours() -> None:
            out["adv"] = PGD(steps=steps, alpha=alpha, early_stop=False).perturb(model, x, y, Budget("linf", EPS))

        def peer() -> None:
            torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=True)(x, y)

        t0 = time.perf_counter()
        best, failed = interleaved({"floor": floor, "ours": ours, "peer": peer}, self.clock, self.cfg.rounds)
        row.images = n
        fill(row, best, failed, "torchattacks")
        if base.training:  # a candidate switched the model to training mode: the timings are not comparable
            base.eval()
            row.notes.append("model was left in training mode")
        if "adv" in out:
            with torch.no_grad():
                acc = (base(out["adv"]).argmax(1) == y).float().mean().item()
            row.notes.append(f"adv acc (fp32) {100 * acc:.1f}%")
        if variant == "compiled":
            row.notes.append(f"warm-up and rounds {time.perf_counter() - t0:.0f} s wall")

    def autoattack(self, row: Row) -> None:
        from pyautoattack import AutoAttack as Reference

        from attacks.autoattack import AutoAttack, draw_seed

        cfg, model = self.cfg, self.resnet
        x, y = self.batch(model, cfg.aa_images)
        torch.manual_seed(0)
        seed = draw_seed()  # the seed our wrapper draws after the same manual_seed
        ours_aa = AutoAttack(version="standard", batch_size=cfg.aa_batch)
        out: dict[str, torch.Tensor] = {}

        def ours() -> None:
            torch.manual_seed(0)
            out["adv"] = ours_aa.perturb(model, x, y, Budget("linf", EPS))

        def peer() -> None:
            aa = Reference(model, norm="Linf", eps=EPS, version="standard", device=x.device, seed=seed)
            aa.verbose = False
            with _silent("auto-attack"):
                aa.run_standard_evaluation(x, y, batch_size=cfg.aa_batch)

        cands = {"ours": ours, "peer": peer}
        best, failed = interleaved(cands, self.clock, min(cfg.rounds, 2), None if cfg.warm_aa else {})
        row.images = len(x)
        fill(row, best, failed, "pyautoattack")
        row.notes.append(f"{len(x):,} images")
        if "adv" in out:
            with torch.no_grad():
                acc = (model(out["adv"]).argmax(1) == y).float().mean().item()
            row.notes.append(f"robust acc {100 * acc:.1f}%")
        if ours_aa.last_seed is not None and ours_aa.last_seed != seed:
            row.notes.append(f"seeds differ ({ours_aa.last_seed} vs {seed})")

    def algorithm1(self, row: Row) -> None:
        from defenses.preempt import PreemptRobustify

        cfg, model = self.cfg, self.resnet
        x, y = self.batch(model, cfg.alg1_images)
        x_floor = perturbed(x)
        defense = PreemptRobustify(norm="linf", eps=EPS, maxiter=cfg.alg1_maxiter, steps=cfg.alg1_steps, n_starts=1)
        passes = cfg.alg1_maxiter * (cfg.alg1_steps + 1)

        def floor() -> None:
            for _ in range(passes):
                xa = x_floor.detach().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)

        def ours() -> None:
            defense.robustify(model, x)

        best, failed = interleaved({"floor": floor, "ours": ours}, self.clock, cfg.rounds)
        row.images = len(x)
        fill(row, best, failed)
        row.notes.append(f"{passes} forward+backward passes")

    def certify(self, row: Row) -> None:
        from defenses.smoothing import Smoothing

        cfg, model = self.cfg, self.resnet
        x, _ = self.batch(model, cfg.cert_images)
        smooth = Smoothing(sigma=SIGMA, n0=N0, n_certify=cfg.cert_n, batch=cfg.cert_batch)
        rows = torch.arange(cfg.cert_batch, device=x.device) % len(x)
        noisy = x[rows] + SIGMA * torch.randn(cfg.cert_batch, *x.shape[1:], device=x.device)
        forwards = len(x) * (N0 + cfg.cert_n)
        k = max(1, min(cfg.cert_floor_passes, math.ceil(forwards / cfg.cert_batch)))

        def floor() -> None:
            with torch.inference_mode():
                for _ in range(k):
                    model(noisy)

        def ours() -> None:
            smooth.certify(model, x)

        warm = {"floor": lambda: floor(), "ours": lambda: smooth.certify(model, x, n=cfg.cert_batch)}
        best, failed = interleaved({"floor": floor, "ours": ours}, self.clock, min(cfg.rounds, 1), warm)
        if "floor" in best:  # k batches of cert_batch noisy inputs, scaled to all n0 + N forward passes
            best["floor"] *= forwards / (k * cfg.cert_batch)
        row.images = len(x)
        fill(row, best, failed)
        row.notes.append(f"{count(len(x), 'image')}, {N0} + {cfg.cert_n:,} draws each; floor timed on {k} of "
                         f"{math.ceil(forwards / cfg.cert_batch)} batches")


@contextlib.contextmanager
def _silent(logger: str):
    log = logging.getLogger(logger)
    saved, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = saved


def _autoattack_checkpoint() -> Path | None:
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "examples" / "model_test.pt"
    return path if path.is_file() else None


def _dataset(data_dir: Path):
    """CIFAR-10's test split under ``data_dir`` (read lazily, never downloaded), or None."""
    from harness.core.errors import DataError
    from harness.data import load

    try:
        data = load("cifar10", "test", str(data_dir))
    except (DataError, OSError) as err:
        return None, f"uniform random images (no CIFAR-10 test set in {data_dir}: {reason(err)[:60]})"
    return data, f"the first n CIFAR-10 test images of {data_dir}"


def plan(bench: Bench) -> list[tuple[Row, Callable[[Row], None], int]]:
    """The rows in table order, each with the case that fills it and its run priority: compiled rows last (the
    largest batch first), as their compilation is what most often runs out of time."""
    cfg = bench.cfg
    rows: list[tuple[Row, Callable[[Row], None], int]] = []
    for label, model in ((bench.resnet_label, bench.resnet), (bench.wrn_label, bench.wrn)):
        for n in cfg.batches:
            for variant in ("fp32", "bf16", "compiled"):
                row = Row(f"PGD-{cfg.pgd_steps} Linf", label, str(n), variant)
                priority = 0 if variant != "compiled" else 1 if n == max(cfg.batches) else 2
                rows.append((row, lambda r, m=model, v=variant, n=n: bench.pgd(r, m, v, n), priority))
    rows.append((Row("AutoAttack standard", bench.resnet_label, str(cfg.aa_batch), "fp32", has_floor=False),
                 bench.autoattack, 0))
    rows.append((Row(f"Algorithm 1 (MAXITER {cfg.alg1_maxiter}, T {cfg.alg1_steps})", bench.resnet_label,
                     str(cfg.alg1_images), "fp32", has_peer=False), bench.algorithm1, 0))
    rows.append((Row(f"CERTIFY (N {cfg.cert_n:,})", bench.resnet_label, f"{cfg.cert_batch:,} per pass", "fp32",
                     has_peer=False), bench.certify, 0))
    return rows
