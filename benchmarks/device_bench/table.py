"""The device benchmark's table: a ``Row`` per case and variant, its cells (rates in images per second, ratios time
over time), and ``report``, the Markdown text with the setup and what the floors and peers are."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .configs import SIGMA, Config

if TYPE_CHECKING:
    from .cases import Bench


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


def fill(row: Row, best: dict[str, float], failed: dict[str, str], peer: str = "peer") -> None:
    """Put the fastest times of ``interleaved`` into ``row``, and a note for each candidate that failed."""
    row.ours, row.floor, row.peer = best.get("ours"), best.get("floor"), best.get("peer")
    if "ours" in failed:
        row.notes.insert(0, f"n/a ({failed['ours']})")
    for name, label in (("floor", "floor"), ("peer", peer)):
        if name in failed:
            row.notes.append(f"{label} n/a ({failed[name]})")


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
             f"of each candidate, then the fastest of {count(cfg.rounds, 'interleaved round')} (AutoAttack: "
             f"{aa_warm}, {count(min(cfg.rounds, 2), 'round')}; CERTIFY: a short warm-up, 1 round).  Ratios are "
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


def count(n: int, what: str) -> str:
    """``n`` and ``what``, plural unless n is 1: "1 round", "2 rounds"."""
    return f"{n} {what}" + ("" if n == 1 else "s")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"
