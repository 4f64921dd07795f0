"""The evaluation loop: defense -> attacks -> per-sample verdicts -> worst case per sample.

For each defense and batch, the defense prepares what the attacker is handed (robustifying once for all
attacks), the defended clean verdict is taken, and each attack runs on the samples still correct.  Every
(defense, attack, batch) is seeded from the run seed, so a run is reproducible and a cell does not depend
on which other attacks ran before it.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from harness.core.attack import Attack
from harness.core.defense import Defense
from harness.core.errors import UsageError

from .counting import CountingModel
from .data.base import ImageSet
from .threat import Verdict, resolve_threat, run_cell


@dataclass
class CellResult:
    attack: str
    threat: str
    norm: str
    eps: float
    verdict: Verdict
    seconds: float = 0.0
    forwards: int = 0
    backwards: int = 0
    certifies: bool = False  # a certifier's cell: certified accuracy, a lower bound, not part of the worst case


@dataclass
class DefenseResult:
    defense: str
    kind: str
    clean: torch.Tensor
    cells: list[CellResult] = field(default_factory=list)
    prepare_seconds: float = 0.0
    prepare_forwards: int = 0
    prepare_backwards: int = 0

    def worst_case(self) -> torch.Tensor:
        """Robust iff every attack run on the sample failed (AND over attacks); clean verdict if none ran."""
        robust = self.clean.clone()
        for cell in self.cells:
            if not cell.certifies:
                robust &= cell.verdict.robust
        return robust

    def check_certificates(self) -> None:
        """A sample certified robust but broken by an attack on the same ball is a bug (of the bounds or of the
        attack's budget): say so, loudly, instead of reporting both numbers."""
        for cert in (c for c in self.cells if c.certifies):
            for cell in (c for c in self.cells if not c.certifies and (c.threat, c.norm, c.eps) ==
                         (cert.threat, cert.norm, cert.eps)):
                broken = cert.verdict.robust & ~cell.verdict.robust & cell.verdict.valid
                if broken.any():
                    raise RuntimeError(f"{self.defense}: {int(broken.sum())} samples certified by {cert.attack} are "
                                       f"broken by {cell.attack} (first: {broken.nonzero()[0].item()}); a bug")


def cell_seed(seed: int, *parts) -> int:
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % (2**63)


def check_logits(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise UsageError("the model returned NaN or infinite logits on clean inputs; check the checkpoint and --arch")


def _cat(verdicts: list[Verdict]) -> Verdict:
    keys = set().union(*(v.extra for v in verdicts))
    return Verdict(*(torch.cat([getattr(v, f) for v in verdicts]) for f in ("clean", "robust", "valid", "dist", "attacked")),
                   extra={k: torch.cat([v.extra[k] for v in verdicts]) for k in sorted(keys) if all(k in v.extra for v in verdicts)})


def evaluate(model: torch.nn.Module, data: ImageSet, defenses: list[tuple[str, Defense]],
             attacks: list[tuple[str, Attack]], *, batch_size: int, seed: int, device: torch.device,
             passes: int = 1, quiet: bool = False) -> list[DefenseResult]:
    model = CountingModel(model.to(device).eval())
    for p in model.parameters():
        p.requires_grad_(False)
    n_batches = (len(data) + batch_size - 1) // batch_size
    threats = {(dn, an): resolve_threat(d, a) for dn, d in defenses for an, a in attacks}
    bar = tqdm(total=len(defenses) * n_batches * (1 + len(attacks)), desc="evaluating", disable=quiet, leave=False)
    results = []
    for dname, defense in defenses:
        if isinstance(defense, torch.nn.Module):
            defense.to(device).eval()
        res = DefenseResult(dname, defense.kind, torch.zeros(0, dtype=torch.bool))
        per_attack: dict[str, list[Verdict]] = {an: [] for an, _ in attacks}
        stats = {an: [0.0, 0, 0] for an, _ in attacks}
        cleans = []
        for b in range(n_batches):
            xb = data.x[b * batch_size:(b + 1) * batch_size].to(device)
            yb = data.y[b * batch_size:(b + 1) * batch_size].to(device)
            with torch.no_grad():
                check_logits(model(xb))
            model.reset()
            torch.manual_seed(cell_seed(seed, dname, "prepare", b))
            t0 = time.perf_counter()
            x_seen = defense.prepare(model, xb, yb).detach()
            clean = defense.classify(model, x_seen) == yb
            res.prepare_seconds += time.perf_counter() - t0
            f, bw = model.reset()
            res.prepare_forwards += f
            res.prepare_backwards += bw
            cleans.append(clean.cpu())
            bar.update()
            for aname, attack in attacks:
                torch.manual_seed(cell_seed(seed, dname, aname, b))
                t0 = time.perf_counter()
                verdict = run_cell(defense, model, attack, threats[dname, aname], xb, x_seen, yb, clean, passes)
                st = stats[aname]
                st[0] += time.perf_counter() - t0
                f, bw = model.reset()
                st[1] += f
                st[2] += bw
                per_attack[aname].append(verdict)
                bar.update()
        res.clean = torch.cat(cleans)
        for aname, attack in attacks:
            s, f, bw = stats[aname]
            res.cells.append(CellResult(aname, threats[dname, aname], attack.norm, attack.eps,
                                        _cat(per_attack[aname]), s, f, bw, attack.certifies))
        if not (defense.randomized or defense.kind == "detector"):  # there a rejection or a draw is no break
            res.check_certificates()
        results.append(res)
    bar.close()
    return results
