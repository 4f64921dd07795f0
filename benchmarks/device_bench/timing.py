"""How the device benchmark times a call: ``Clock`` (CUDA events on CUDA, process CPU time on the CPU) and
``interleaved`` (one warm-up call of each candidate, then the fastest of interleaved rounds)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


def reason(err: BaseException) -> str:
    """One short line for a failure: the exception's type and its message, folded, at most 100 characters."""
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
            free(clock)
    for _ in range(rounds):
        for name, fn in list(live.items()):
            try:
                t = clock(fn)
            except Exception as err:  # noqa: BLE001
                failed[name] = reason(err)
                del live[name]
                free(clock)
                continue
            best[name] = min(best.get(name, math.inf), t)
    return best, failed


def free(clock: Clock) -> None:
    """Hand the CUDA caching allocator's unused memory back (after a failure or a row); nothing on the CPU."""
    if clock.cuda:
        torch.cuda.empty_cache()
