"""The sizes of the device benchmark's three configurations: CUDA, CUDA ``--quick`` and the tiny CPU fallback."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

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
