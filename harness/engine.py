"""The evaluation loop: defense -> attacks -> per-sample verdicts -> worst case per sample.

For each defense and batch, the defense prepares what the attacker is handed (robustifying once for all
attacks and budgets), the defended clean verdict is taken, and each attack runs on the samples still correct, at
each budget in turn (one attack object serves every eps: the ``Budget`` is an argument of each call; a defense
whose parameters follow the budget is one object per budget, ``harness.entrants``).  Every (defense, attack, batch)
is seeded from the run seed, so a run is reproducible, a cell does not depend on which other attacks ran before
it, and the rows of a several-eps run equal those of separate one-eps runs.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import torch

from harness.core import progress
from harness.core.attack import Attack
from harness.core.budget import Budget
from harness.core.capabilities import Randomized, declares
from harness.core.defense import Defense
from harness.core.errors import UsageError

from .counting import CountingModel
from .data.base import ImageSet
from .entrants import Entrant
from .precision import AutocastAttack, under
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
    budget: float | None = None  # the run's eps this cell belongs to (None: a run of one budget, whatever its eps)


@dataclass
class DefenseResult:
    defense: str
    kind: str
    clean: torch.Tensor
    cells: list[CellResult] = field(default_factory=list)
    prepare_seconds: float = 0.0
    prepare_forwards: int = 0
    prepare_backwards: int = 0

    def budgets(self) -> list[float | None]:
        """The run budgets of this result's cells, in the order they ran ([None] for a run of one budget)."""
        return list(dict.fromkeys(c.budget for c in self.cells)) or [None]

    def worst_case(self, budget: float | None = None) -> torch.Tensor:
        """Robust iff every attack run on the sample at ``budget`` failed (AND over attacks); the clean verdict if
        none ran."""
        robust = self.clean.clone()
        for cell in self.cells:
            if not cell.certifies and cell.budget == budget:
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


def served(defenses: list[tuple[str, Entrant]], eps: list[float] | None
           ) -> list[tuple[str, Defense, list[tuple[Budget, float | None]]]]:
    """Each defense object with the budgets it is evaluated at, each with the run budget its cells belong to (None
    in a run of one budget).  A defense whose parameters follow the budget (preempt's delta = eps) is one object per
    budget of a several-eps run; any other serves them all (``Entrant``)."""
    out = []
    for name, entrant in defenses:
        if eps is not None and [b.eps for b in entrant.budgets] != list(eps):
            raise ValueError(f"{name}: evaluated at eps {[b.eps for b in entrant.budgets]}, the run's are {list(eps)}")
        out += [(name, d, [(b, None if eps is None else b.eps) for b in budgets]) for d, budgets in entrant.served()]
    return out


def evaluate(model: torch.nn.Module, data: ImageSet, defenses: list[tuple[str, Entrant]],
             attacks: list[tuple[str, Attack]], *, batch_size: int, seed: int, device: torch.device,
             passes: int = 1, eps: list[float] | None = None, amp=None,
             identities: dict[str, str] | None = None) -> list[DefenseResult]:
    """Run every (defense, attack, budget) cell.  ``defenses``: (label, ``Entrant``) pairs, each with the run's
    budgets; ``eps``: the run's eps when several (their cells then carry their budget), None for one budget.

    ``identities``: label -> what the plugin is (``PluginSpec.identity``: name and given parameters); a cell's
    seed derives from its defense's and attack's identities, never from their labels (default: the label).
    ``amp``: a factory of autocast contexts for ``defense.prepare`` and ``attack.run`` (``harness.precision``;
    None: fp32); the clean verdict, the judge and certifiers (their bounds must be sound) stay in fp32."""
    ident = (identities or {}).get
    model = CountingModel(model.to(device).eval())
    for p in model.parameters():
        p.requires_grad_(False)
    n_batches = (len(data) + batch_size - 1) // batch_size
    entrants = served(defenses, eps)
    threats = {(dn, an): resolve_threat(d, a) for dn, d, _ in entrants for an, a in attacks}
    for _, _, budgets in entrants:
        for an, a in attacks:
            for budget, _ in budgets:
                a.supports(budget)
    n_cells = sum(len(e) for _, _, e in entrants) * len(attacks)
    bar = progress.bar(n_batches * (len(entrants) + n_cells), "evaluating")  # off under --quiet
    results = []
    for dname, defense, budgets in entrants:
        if isinstance(defense, torch.nn.Module):
            defense.to(device).eval()
        res = DefenseResult(dname, defense.kind, torch.zeros(0, dtype=torch.bool))
        cells = [(an, a, budget, e) for budget, e in budgets for an, a in attacks]
        per_cell: list[list[Verdict]] = [[] for _ in cells]
        stats = [[0.0, 0, 0] for _ in cells]
        cleans = []
        for b in range(n_batches):
            xb = data.x[b * batch_size:(b + 1) * batch_size].to(device)
            yb = data.y[b * batch_size:(b + 1) * batch_size].to(device)
            with torch.no_grad():
                check_logits(model(xb))
            model.reset()
            torch.manual_seed(cell_seed(seed, ident(dname, dname), "prepare", b))
            t0 = time.perf_counter()
            x_seen = under(amp, defense.prepare, model, xb, yb).detach().to(xb.dtype)
            clean = defense.classify(model, x_seen) == yb
            res.prepare_seconds += time.perf_counter() - t0
            f, bw = model.reset()
            res.prepare_forwards += f
            res.prepare_backwards += bw
            cleans.append(clean.cpu())
            bar.update()
            for k, (aname, attack, budget, e) in enumerate(cells):
                torch.manual_seed(cell_seed(seed, ident(dname, dname), ident(aname, aname), b))  # not eps: a budget's rows as in a run of its own
                t0 = time.perf_counter()
                att = attack if amp is None or attack.certifies else AutocastAttack(attack, amp, device.type)
                verdict = run_cell(defense, model, att, threats[dname, aname], budget, xb, x_seen, yb, clean, passes)
                st = stats[k]
                st[0] += time.perf_counter() - t0
                f, bw = model.reset()
                st[1] += f
                st[2] += bw
                per_cell[k].append(verdict)
                bar.update()
        res.clean = torch.cat(cleans)
        for k, (aname, attack, budget, e) in enumerate(cells):
            s, f, bw = stats[k]
            res.cells.append(CellResult(aname, threats[dname, aname], budget.norm, budget.eps, _cat(per_cell[k]), s, f,
                                        bw, attack.certifies, e))
        if not (declares(defense, Randomized) or defense.rejects):  # there a rejection or a draw is no break
            res.check_certificates()
        results.append(res)
    bar.close()
    return results
