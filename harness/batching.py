"""``run --batch-size auto``: the largest batch that fits the device, found by a short probe with halving backoff.

The probe (``probe_batch_size``) runs what an attack step costs, one forward and one backward pass of the model
with respect to its input (``forward_backward``, under the run's autocast), on the first ``b`` images of the run,
starting from ``b = min(n, CUDA_CAP)`` and halving on an out-of-memory error (``torch.OutOfMemoryError``, or a
RuntimeError saying "out of memory") until one fits.  It leaves the model as it found it (eval mode, no parameter
gradients) and draws no random numbers.  Defenses and attacks that hold more than one step's activations at once
(several restarts in one batch, say) may need a smaller batch than the probe finds: pass ``--batch-size N``.

On the CPU there is no probe: ``auto`` is the default batch, ``DEFAULT`` = 500 images (a CPU run is bounded by
time, not by memory, and an out-of-memory there may kill the process instead of raising).

The chosen size is the run's batch size: it is hashed in the config as a given ``--batch-size`` is, and run.json
records the probe (``batching``).  Results may depend on it: every (defense, attack, batch) is seeded from the
run seed and the batch index (``harness.engine.cell_seed``) and random draws (PGD's random start, smoothing's
noise) follow the batch layout, so an ``auto`` run equals the ``--batch-size N`` run of the size it chose, not
necessarily a run of another size.  Deterministic attacks without random draws (FGSM; PGD without a random
start) give the same verdicts at any batch size up to floating-point reduction order on the device.
"""
from __future__ import annotations

import contextlib

from harness.core.errors import UsageError

# torch is imported where it is used: the command line parser reads parse_batch_size, and parsing stays torch-free.

DEFAULT = 500
CUDA_CAP = 4096


def parse_batch_size(text: str):
    """argparse type of ``run --batch-size``: a positive integer, or ``auto``."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--batch-size expects a positive integer or auto, got {text!r}") from None


def is_oom(err: BaseException) -> bool:
    """An out-of-memory error of the device (CUDA's OutOfMemoryError, or a RuntimeError that says so)."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def forward_backward(model, x, y) -> None:
    """One attack step's cost: the loss of the model on ``x`` and its gradient in ``x``."""
    import torch
    import torch.nn.functional as F

    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    torch.autograd.grad(loss, x)


def start_size(n: int, device) -> int | None:
    """The probe's first batch size (None: no probe, ``DEFAULT``): min(n, CUDA_CAP) on CUDA."""
    return min(n, CUDA_CAP) if device.type == "cuda" else None


def probe_batch_size(model, x, y, device, amp=None) -> tuple[int, dict]:
    """(the batch size, the probe's record for run.json) for ``len(x)`` images on ``device``."""
    import torch

    start = start_size(len(x), device)
    if start is None:
        return DEFAULT, {"requested": "auto", "chosen": DEFAULT, "probed": [], "rule": f"{device.type}: the default"}
    training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tried, b = [], start
    try:
        while True:
            tried.append(b)
            try:
                with torch.enable_grad(), (amp() if amp is not None else contextlib.nullcontext()):
                    forward_backward(model, x[:b].to(device), y[:b].to(device))
                break
            except Exception as err:  # only out-of-memory is retried
                if not is_oom(err):
                    raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if b == 1:
                raise UsageError(f"--batch-size auto: not even one image fits in the memory of {device}")
            b //= 2
    finally:
        model.train(training)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return b, {"requested": "auto", "chosen": b, "probed": tried, "rule": f"halve from min(n, {CUDA_CAP}) on out-of-memory"}
