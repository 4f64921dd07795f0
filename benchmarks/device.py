"""One prepared device benchmark: the project's attacks and defenses against their floors and peers, one table.

    python benchmarks/device.py [--quick] [--out FILE.md] [--device auto|cpu|cuda] [--data-dir DIR]
    benchmarks/device.sh [same options]

Rows (CUDA sizes; the CPU fallback's are in ``CPU`` in benchmarks/device_bench/configs.py):

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

This file is the command line (``run`` and ``main``); the parts are in benchmarks/device_bench/: the sizes
(``configs``), the clock and the interleaved rounds (``timing``), the rows and the report (``table``), and the
cases and their plan (``cases``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

# benchmarks/device_bench/ is found next to this script (the script's folder is sys.path[0])
from device_bench.cases import Bench, plan
from device_bench.configs import CPU, CUDA, CUDA_QUICK, Config
from device_bench.table import report
from device_bench.timing import free, reason


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
        free(bench.clock)
        print(f"[{time.perf_counter() - start:6.0f} s] {row.case} | {row.model} | {row.batch} | {row.variant}",
              file=sys.stderr, flush=True)
    return report(cfg, device, bench, [r for r, _, _ in rows], time.perf_counter() - start)


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
