"""AutoAttack (Croce & Hein, ICML 2020) through the reference implementation ``pyautoattack``.

``autoattack`` runs a whole version: ``standard`` (APGD-CE, APGD-T with 9 target classes, FAB-T with 9 target
classes, Square with 5000 queries; one restart each), ``plus`` (adds APGD-DLR and untargeted FAB, 5 restarts)
or ``rand`` (APGD-CE and APGD-DLR with EOT over 20 draws, for randomized defenses).  The single attacks
``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab-t`` and ``square`` are pyautoattack's ``version='custom'`` with
one attack and the settings the standard version gives that attack (pyautoattack's own ``_set_version``
is applied, so they cannot drift apart); ``apgd-dlr`` is not in the standard list and gets the standard
version's APGD settings (one restart).

Reproducibility: pyautoattack seeds itself from the clock unless given a seed, and reseeds torch's global
generator with it before every attack.  Here the seed is drawn from torch's global generator (seeded per
cell by the engine), so the same run seed gives the same images; pyautoattack's reseeding runs inside
``torch.random.fork_rng`` and does not leak out of ``perturb``.  Its ``auto-attack`` logger is silenced unless
``verbose``.  Target counts are capped at num_classes - 1 (9 on ten classes, as in the reference).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import ClassVar, Literal

import torch

from harness.core.attack import NO_CONTEXT, Attack, AttackContext
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.registry import ATTACKS

AA_NORMS = {"linf": "Linf", "l2": "L2"}
VERSION_ATTACKS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}


def set_apgd_iterations(apgd, n_iter: int) -> None:
    """APGD derives its step-size checkpoints from n_iter in its constructor; keep them consistent."""
    if apgd.n_iter == n_iter:
        return
    apgd.n_iter = apgd.n_iter_orig = int(n_iter)
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


def positive(**values) -> None:
    for key, value in values.items():
        if not value > 0:
            raise UsageError(f"{key} must be positive, got {value}")


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA generators to save and restore around a reference that calls torch.cuda.manual_seed."""
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return [torch.cuda.current_device()]
    return []


def draw_seed() -> int:
    """A seed for a self-seeding reference implementation, drawn from torch's (engine-seeded) global generator."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


@contextlib.contextmanager
def quiet_logger(name: str, verbose: bool):
    """Silence logger ``name`` (or let its debug messages through to stderr when ``verbose``)."""
    logger = logging.getLogger(name)
    saved = logger.disabled, logger.level, list(logger.handlers)
    if verbose:
        logger.disabled = False
        logger.setLevel(logging.DEBUG)
        if not logger.hasHandlers():
            logger.addHandler(logging.StreamHandler(sys.stderr))
    else:
        logger.disabled = True
    try:
        yield
    finally:
        logger.disabled, level, handlers = saved
        logger.setLevel(level)
        logger.handlers[:] = handlers


def _import_autoattack():
    try:
        from pyautoattack import AutoAttack as Reference
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise UsageError(f"AutoAttack needs pyautoattack ({err}); pip install pyautoattack") from None
    return Reference


class AutoAttackBase(Attack):
    """Common part: build pyautoattack's AutoAttack for the input's device and a drawn seed, run, return x_adv."""

    single: ClassVar[str | None] = None  # one attack run as version='custom'; None: the whole version
    version: str = "standard"
    batch_size: int = 250

    def __init__(self, batch_size: int = 250, verbose: bool = False, threat: str | None = None):
        positive(batch_size=batch_size)
        self.batch_size, self.threat = int(batch_size), threat
        self._verbose = bool(verbose)
        self.last_seed: int | None = None

    def attacks_to_run(self) -> tuple[str, ...]:
        return (self.single,) if self.single else VERSION_ATTACKS[self.version]

    def _tune(self, aa) -> None:
        """Per-attack settings on top of the version's (single attacks' parameters)."""

    def build(self, model, device, seed: int, num_classes: int, budget: Budget):
        """pyautoattack's AutoAttack with this attack's settings at ``budget`` (exposed for the fidelity tests)."""
        Reference = _import_autoattack()
        common = dict(device=device, eps=budget.eps, norm=AA_NORMS[budget.norm], seed=seed)
        if self.single is None:
            aa = Reference(model, version=self.version, **common)
        else:
            aa = Reference(model, attacks=[self.single], version="custom", **common)
            aa._set_version("standard")  # the standard version's settings, from the reference itself
            aa.attacks_to_run, aa.version = [self.single], "custom"
        self._tune(aa)
        run = self.attacks_to_run()
        if any(a in ("apgd-dlr", "apgd-t") for a in run) and num_classes < (4 if "apgd-t" in run else 3):
            raise UsageError(f"{'/'.join(run)}: the DLR loss needs at least {4 if 'apgd-t' in run else 3} classes, "
                             f"the model has {num_classes}")
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, num_classes - 1)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, num_classes - 1)
        return aa

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, budget: Budget,
                context: AttackContext = NO_CONTEXT) -> torch.Tensor:
        x = x.detach()
        seed = draw_seed()
        self.last_seed = seed
        if len(x) == 0:
            return x.clone()
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        aa = self.build(model, x.device, seed, num_classes, budget)
        devices = rng_devices(x.device)
        trace = sys.gettrace()  # pyautoattack's dynamic-defense check ends with sys.settrace(None)
        try:
            with torch.random.fork_rng(devices=devices), quiet_logger("auto-attack", self._verbose):
                aa.verbose = self._verbose
                x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=self.batch_size)
        finally:
            sys.settrace(trace)
        return x_adv.detach()

    def describe(self, budget: Budget | None = None) -> dict:
        d = super().describe(budget)
        d.pop("last_seed", None)
        return d


@ATTACKS.register("autoattack", "AutoAttack (Croce & Hein 2020, pyautoattack): version standard|plus|rand")
class AutoAttack(AutoAttackBase):
    def __init__(self, version: Literal["standard", "plus", "rand"] = "standard", batch_size: int = 250,
                 verbose: bool = False, threat: str | None = None):
        if version not in VERSION_ATTACKS:
            raise UsageError(f"version must be one of {', '.join(VERSION_ATTACKS)}, got {version!r}")
        super().__init__(batch_size=batch_size, verbose=verbose, threat=threat)
        self.version = version


class _APGD(AutoAttackBase):
    def __init__(self, n_iter: int = 100, n_restarts: int = 1, batch_size: int = 250, verbose: bool = False,
                 threat: str | None = None):
        super().__init__(batch_size=batch_size, verbose=verbose, threat=threat)
        positive(n_iter=n_iter, n_restarts=n_restarts)
        self.n_iter, self.n_restarts = int(n_iter), int(n_restarts)

    def _tune(self, aa) -> None:
        set_apgd_iterations(aa.apgd, self.n_iter)
        aa.apgd.n_restarts = self.n_restarts


@ATTACKS.register("apgd-ce", "APGD on cross-entropy (Croce & Hein 2020, pyautoattack); standard AutoAttack settings")
class APGDCE(_APGD):
    single = "apgd-ce"


@ATTACKS.register("apgd-dlr", "APGD on the DLR loss (Croce & Hein 2020, pyautoattack); one restart as in standard")
class APGDDLR(_APGD):
    single = "apgd-dlr"


class _Targeted(AutoAttackBase):
    """The targeted attacks: ``n_iter`` iterations against each of ``n_target_classes`` top classes."""

    def __init__(self, n_iter: int = 100, n_target_classes: int = 9, batch_size: int = 250, verbose: bool = False,
                 threat: str | None = None):
        super().__init__(batch_size=batch_size, verbose=verbose, threat=threat)
        positive(n_iter=n_iter, n_target_classes=n_target_classes)
        self.n_iter, self.n_target_classes = int(n_iter), int(n_target_classes)


@ATTACKS.register("apgd-t", "targeted APGD-DLR over the top classes (pyautoattack); standard: 9 targets")
class APGDT(_Targeted):
    single = "apgd-t"

    def _tune(self, aa) -> None:
        set_apgd_iterations(aa.apgd_targeted, self.n_iter)
        aa.apgd_targeted.n_target_classes = self.n_target_classes


@ATTACKS.register("fab-t", "targeted FAB (Croce & Hein 2020, pyautoattack); standard: 9 targets, 1 restart")
class FABT(_Targeted):
    single = "fab-t"

    def _tune(self, aa) -> None:
        aa.fab.n_iter, aa.fab.n_target_classes = self.n_iter, self.n_target_classes


@ATTACKS.register("square", "Square Attack (Andriushchenko et al. 2020, pyautoattack); score-based, 5000 queries")
class Square(AutoAttackBase):
    single = "square"
    gradients = "gradient-free"

    def __init__(self, n_queries: int = 5000, batch_size: int = 250, verbose: bool = False,
                 threat: str | None = None):
        super().__init__(batch_size=batch_size, verbose=verbose, threat=threat)
        positive(n_queries=n_queries)
        self.n_queries = int(n_queries)

    def _tune(self, aa) -> None:
        aa.square.n_queries = self.n_queries
