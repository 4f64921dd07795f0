"""One prepared device benchmark: the project's attacks and defenses against their floors and peers, one table.

    python benchmarks/device.py [--quick] [--out FILE.md] [--device auto|cpu|cuda] [--data-dir DIR]
    benchmarks/device.sh [same options]

Rows (CUDA sizes; the CPU fallback's are in ``CPU`` below):

- **PGD-20 Linf** (eps 8/255, step eps/4, random start, early stopping off so that every sample takes every step)
  on AutoAttack's bundled CIFAR ResNet-18 (``pyautoattack/examples/model_test.pt``, random weights if absent) and
  on a WRN-34-10 (random weights), at batch 256 and 1024, in three variants: ``fp32``; ``bf16`` (the model's
  forward, and so its backward, under ``torch.autocast(bfloat16)``, logits cast back to fp32; the verdict, the
  "adv acc" in the note, is always the fp32 model's); ``compiled`` (``torch.compile(model, dynamic=False)``, mode
  default, fp32).  Floor: 20 forward+backward passes (``autograd.grad(model(x).sum(), x)``) of the same model
  variant on the same batch, perturbed once (clamp(x + U(B_eps), 0, 1)).  Peer: ``torchattacks.PGD`` with the same
  steps, step size and random start, on the same model variant.
- **AutoAttack standard** (Linf 8/255) on 1,000 images through ``attacks.autoattack`` against a direct
  ``pyautoattack.AutoAttack(...).run_standard_evaluation`` call with the same seed and batch size (peer; no floor).
- **Algorithm 1** (``defenses.preempt``, Linf 8/255, MAXITER 10, T = 20, N = 1) on 256 images of the ResNet-18.
  Floor: MAXITER x (T + 1) forward+backward passes (CE summed, gradient in the input) on the batch perturbed once.
- **CERTIFY** (``defenses.smoothing``, sigma 0.25, n0 = 100, N = 100,000, 10,000 noisy inputs per forward pass) on
  100 images of the ResNet-18.  Floor: the n0 + N forward passes per image alone, on one pre-drawn noisy batch
  (x + N(0, sigma^2), as CERTIFY draws them), timed over the first ``cert_floor_passes`` batches and scaled.

Each row gives images per second of ours, the floor and the peer, and the ratios ours / floor and ours / peer
(time over time: above 1 is slower).  Images are the CIFAR-10 test images under ``--data-dir`` when present (the
first n; random uniform images otherwise); labels are the fp32 model's own predictions, so every sample is
attacked.  Timing: one warm-up call of each candidate (compilation, cuDNN heuristics, allocation), then
``rounds`` interleaved rounds (floor, ours, peer, floor, ...), the fastest of each kept; CUDA events after a
synchronize on CUDA, process CPU time on one thread on the CPU.  A variant that fails prints "n/a (reason)" and
the table still prints; rows that would start after the time budget print "n/a (time budget)".  Compiled rows
run last, the largest batch first (their compilation is the slowest part).  cuDNN's autotuner is left off (its
default), so the many batch shapes of AutoAttack cost no tuning.  Nothing is downloaded.

Without CUDA the script runs a tiny CPU fallback (batch 8, PGD-5, a WRN-16-4 standing in for the WRN-34-10,
AutoAttack on 4 images, MAXITER 2 / T 5 on 8 images, CERTIFY with N = 1,000 on one image) that checks the script
end to end in about two to three minutes on one core (PGD-5: a PGD-20 call on the ResNet-18 takes 4 CPU-s at
batch 8); its numbers say nothing about a GPU.  The CUDA sizes are sized from estimates, not yet from a GPU run:
the progress lines on stderr give each row's finishing time, to resize ``CUDA`` after the first run.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch
import torch.nn.functional as F
from torch import nn
from harness.core.budget import Budget

EPS = 8 / 255
SIGMA, N0 = 0.25, 100


@dataclass(frozen=True)
class Config:
    """Sizes of one configuration (CUDA, CUDA --quick, or the CPU fallback)."""

    label: str
    pgd_steps: int
    batches: tuple[int, ...]
    wrn: str  # registry name of the wide network
    wrn_kw: dict = field(default_factory=dict)
    wrn_label: str = "WRN-34-10, random weights"
    rounds: int = 2  # timed rounds after the warm-up (CUDA events are steady; a WRN-34-10 round is seconds)
    aa_images: int = 1000
    aa_batch: int = 500
    alg1_images: int = 256
    alg1_maxiter: int = 10
    alg1_steps: int = 20
    cert_images: int = 100
    cert_n: int = 100_000
    cert_batch: int = 10_000
    cert_floor_passes: int = 100
    budget_s: float = 360.0  # no row starts after this many seconds (the longest row takes about two minutes)
    warm_aa: bool = True  # a whole AutoAttack call as warm-up (too slow on the CPU)


CUDA = Config("CUDA", 20, (256, 1024), "wrn34_10")
CUDA_QUICK = replace(CUDA, label="CUDA --quick", batches=(256,), rounds=1, aa_images=500, cert_n=10_000,
                     cert_floor_passes=20, budget_s=200.0)
CPU = Config("CPU fallback", pgd_steps=5, batches=(8,), wrn="wide_resnet", wrn_kw={"depth": 16, "widen_factor": 4},
             wrn_label="WRN-16-4, random weights (CPU stand-in for WRN-34-10)", rounds=1, aa_images=4, aa_batch=4,
             alg1_images=8, alg1_maxiter=2, alg1_steps=5, cert_images=1, cert_n=1_000, cert_batch=100,
             cert_floor_passes=3, budget_s=150.0, warm_aa=False)


@dataclass
class Row:
    """One line of the table: seconds per call of ours, the floor and the peer (None: not measured)."""

    case: str
    model: str
    batch: str
    variant: str
    images: int = 0  # images one call handles
    ours: float | None = None
    floor: float | None = None
    peer: float | None = None
    has_floor: bool = True  # False: the case has no floor (shown as a dash, not n/a)
    has_peer: bool = True
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        ours = _rate(self.images, self.ours)
        floor = _rate(self.images, self.floor) if self.has_floor else "-"
        peer = _rate(self.images, self.peer) if self.has_peer else "-"
        vs_floor = _ratio(self.ours, self.floor) if self.has_floor else "-"
        vs_peer = _ratio(self.ours, self.peer) if self.has_peer else "-"
        return [self.case, self.model, self.batch, self.variant, ours, floor, peer, vs_floor, vs_peer,
                "; ".join(self.notes)]


HEADER = ["case", "model", "batch", "variant", "ours img/s", "floor img/s", "peer img/s", "ours/floor",
          "ours/peer", "note"]


def _rate(images: int, seconds: float | None) -> str:
    if seconds is None or not images:
        return "n/a"
    r = images / seconds
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:100]


class Clock:
    """Seconds of one call: CUDA events around it on CUDA, process CPU time on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if not self.cuda:
            t0 = time.process_time()
            fn()
            return time.process_time() - t0
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def interleaved(cands: dict[str, Callable[[], object]], clock: Clock, rounds: int,
                warmups: dict[str, Callable[[], object]] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The fastest of ``rounds`` interleaved timed calls of each candidate, after one warm-up call each
    (``warmups``: other warm-up calls, {} for none); and why each failed candidate failed."""
    best: dict[str, float] = {}
    failed: dict[str, str] = {}
    live = dict(cands)
    for name, fn in (cands if warmups is None else warmups).items():
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - one failing variant must not stop the table
            failed[name] = reason(err)
            live.pop(name, None)
            _free(clock)
    for _ in range(rounds):
        for name, fn in list(live.items()):
            try:
                t = clock(fn)
            except Exception as err:  # noqa: BLE001
                failed[name] = reason(err)
                del live[name]
                _free(clock)
                continue
            best[name] = min(best.get(name, math.inf), t)
    return best, failed


def _free(clock: Clock) -> None:
    if clock.cuda:
        torch.cuda.empty_cache()


def fill(row: Row, best: dict[str, float], failed: dict[str, str], peer: str = "peer") -> None:
    row.ours, row.floor, row.peer = best.get("ours"), best.get("floor"), best.get("peer")
    if "ours" in failed:
        row.notes.insert(0, f"n/a ({failed['ours']})")
    for name, label in (("floor", "floor"), ("peer", peer)):
        if name in failed:
            row.notes.append(f"{label} n/a ({failed[name]})")


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
        row.notes.append(f"{_count(len(x), 'image')}, {N0} + {cfg.cert_n:,} draws each; floor timed on {k} of "
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


def run(cfg: Config, device: torch.device, data_dir: Path) -> str:
    start = time.perf_counter()
    bench = Bench(cfg, device, data_dir)
    rows = plan(bench)
    for row, case, _ in sorted(rows, key=lambda r: r[2]):
        elapsed = time.perf_counter() - start
        if elapsed > cfg.budget_s:
            row.notes.insert(0, f"n/a (time budget: {cfg.budget_s:.0f} s spent before this row)")
            continue
        torch.manual_seed(0)
        try:
            case(row)
        except Exception as err:  # noqa: BLE001 - the table prints whatever fails
            row.notes.insert(0, f"n/a ({reason(err)})")
        _free(bench.clock)
        print(f"[{time.perf_counter() - start:6.0f} s] {row.case} | {row.model} | {row.batch} | {row.variant}",
              file=sys.stderr, flush=True)
    return report(cfg, device, bench, [r for r, _, _ in rows], time.perf_counter() - start)


def report(cfg: Config, device: torch.device, bench: Bench, rows: list[Row], seconds: float) -> str:
    """The Markdown text: a first line that says where it ran, the setup, the table and what the floors are."""
    if device.type == "cuda":
        title = (f"# Device benchmark: {cfg.label} on {torch.cuda.get_device_name(device)} (torch {torch.__version__}, "
                 f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32})")
        clock = "CUDA events (after a synchronize)"
    else:
        title = (f"# Device benchmark: CPU fallback (no CUDA device was used): a tiny configuration on one thread "
                 f"(torch {torch.__version__}); it checks the script, its numbers say nothing about a GPU")
        clock = "process CPU time, one thread"
    aa_warm = "one warm-up call" if cfg.warm_aa else "no warm-up"
    setup = (f"Images: {bench.data_note}; labels: the fp32 model's predictions.  Timing: {clock}; one warm-up call "
             f"of each candidate, then the fastest of {_count(cfg.rounds, 'interleaved round')} (AutoAttack: "
             f"{aa_warm}, {_count(min(cfg.rounds, 2), 'round')}; CERTIFY: a short warm-up, 1 round).  Ratios are "
             f"time over time (above 1: slower than the floor or the peer).  Total {seconds:.0f} s.")
    legend = (f"Floors (same model variant, same batch, same run): PGD: {cfg.pgd_steps} forward+backward passes on "
              f"clamp(x + U(B_eps), 0, 1); Algorithm 1: MAXITER x (T + 1) forward+backward passes (CE summed) on "
              f"the same perturbed batch; CERTIFY: the n0 + N forward passes per image alone, on pre-drawn "
              f"x + N(0, {SIGMA}^2) inputs.  Peers: PGD: torchattacks.PGD (same steps, step eps/4, random start); "
              f"AutoAttack: a direct pyautoattack.AutoAttack call with the same seed and batch size.  PGD runs "
              f"with early stopping off (the floor's work).  bf16: torch.autocast around the forward and backward, "
              f"the verdict (adv acc) by the fp32 model; compiled: torch.compile(model, dynamic=False), fp32.")
    align = ["---" if i < 4 or i == len(HEADER) - 1 else "---:" for i in range(len(HEADER))]
    table = [_md_row(HEADER), _md_row(align)] + [_md_row(row.cells()) for row in rows]
    return "\n".join([title, "", setup, "", *table, "", legend]) + "\n"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CUDA: batch 256 only, N 10,000, one round")
    ap.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i]")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data",
                    help="folder with CIFAR-10's test set (default ../shared/data); random images without it")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    from harness.core.progress import set_quiet

    set_quiet(True)
    if device.type == "cuda":
        cfg = CUDA_QUICK if args.quick else CUDA
    else:
        cfg = CPU
        torch.set_num_threads(1)
        print("device.py: no CUDA device - running the tiny CPU fallback (about 3 minutes on one core)",
              file=sys.stderr, flush=True)
    text = run(cfg, device, args.data_dir)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
