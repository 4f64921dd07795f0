"""The part the torchattacks and Foolbox adapters share (``attacks.adapters``): the library class by name, its
constructor parameters, ``--set`` values, the model handed to the library, and ``LibraryAttack`` (names,
parameters, the budget, targets and the final projection)."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from harness.core.attack import Attack
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.geometry import NORMS, flat_norm, project
from harness.core.registry import parse_number

PREFIXES = {"ta.": "torchattacks", "fb.": "foolbox"}
PREFIX_OF = {library: prefix for prefix, library in PREFIXES.items()}
# torchattacks classes whose budget is in one norm (eps-budget attacks by their papers; CW/DeepFool: L2
# minimization).  A class not listed: both norms when it takes a ``norm``, else Linf when it takes an eps
# (unless its name says L2), else both (its images are projected onto the budget).
TA_LINF = {"FGSM", "BIM", "RFGSM", "PGD", "EOTPGD", "FFGSM", "TPGD", "MIFGSM", "UPGD", "DIFGSM", "TIFGSM",
           "Jitter", "NIFGSM", "PGDRS", "SINIFGSM", "VMIFGSM", "VNIFGSM", "SPSA", "PIFGSM", "PIFGSMPP"}
TA_L2 = {"PGDL2", "PGDRSL2", "CW", "DeepFool"}
TA_EPS_NAMES = ("eps", "max_epsilon")
OWN = ("targeted", "target", "project", "threat")


class Value:
    """``--set`` type of a library parameter: none/true/false, an int, a float (also ``8/255``), else the text."""

    def __new__(cls, text):
        return parse_value(text)


def parse_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return parse_number(low)
    except (ValueError, ZeroDivisionError):
        return text


# How to install each library where it is missing.  torchattacks is not a dependency of the harness: its metadata
# asks for torchvision (and an old requests), which its attacks do not need, so it goes in without them.
INSTALL = {"torchattacks": "pip install --no-deps torchattacks==3.5.1", "foolbox": "pip install foolbox"}


def _import(library: str):
    try:
        return importlib.import_module(library)
    except ImportError as err:
        raise UsageError(f"the {PREFIX_OF[library]}<Class> attacks need {library}, which is not installed ({err}): "
                         f"{INSTALL[library]}") from None


def _peer_class(library: str, name: str):
    module = _import(library)
    base = module.attack.Attack if library == "torchattacks" else module.attacks.Attack
    space = module if library == "torchattacks" else module.attacks
    cls = getattr(space, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, base) and cls is not base):
        known = [n for n in dir(space) if inspect.isclass(getattr(space, n)) and issubclass(getattr(space, n), base)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        prefix = "ta." if library == "torchattacks" else "fb."
        hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
        raise UsageError(f"{library} has no attack {name!r}{hint}")
    return cls


def _peer_params(cls) -> dict[str, inspect.Parameter]:
    """The constructor parameters a user may set (not the model, not what the budget fills in)."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    skip = {"self", "model", "norm", "distance", *TA_EPS_NAMES}
    return {n: p for n, p in params.items() if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


class _Forward(nn.Module):
    """What the libraries are handed: calls the model, in eval mode, without owning it.

    torchattacks ends every attack with ``model.train()`` when the module it holds reports training mode
    (our CountingModel and nn.Sequential surfaces are built in the default training mode), which would put
    the classifier's BatchNorm and dropout in training mode for the rest of the run; Foolbox warns on such
    a module.  The model is held outside ``_modules``, so neither library can change its mode or device.
    """

    def __init__(self, model):
        super().__init__()
        self.__dict__["fn"] = model
        self.eval()

    def forward(self, x):
        return self.fn(x)


def _device(model, x: torch.Tensor) -> torch.device:
    """The model's device (its first parameter's or buffer's), else the input's."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return x.device


def _num_classes(model, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


class LibraryAttack(Attack):
    """Shared part of the two adapters: names, parameters, the budget, targets and the final projection."""

    library: ClassVar[str] = ""
    prefix: ClassVar[str] = ""

    def __init__(self, name: str, **kw):
        cls = _peer_class(self.library, name)
        self.name = name
        self._cls = cls
        self._peer = _peer_params(cls)
        own = {k: kw.pop(k) for k in OWN if k in kw and k not in self._peer}
        self.targeted = bool(own.get("targeted", False))
        self.target = own.get("target", "random")
        self.project = bool(own.get("project", True))
        self.threat = own.get("threat")
        if self.target not in ("random", "least"):
            raise UsageError(f"target must be random or least, got {self.target!r}")
        self.norms = self.class_norms(cls)
        self.params = {k: parse_value(v) for k, v in kw.items()}
        unknown = [k for k in self.params if k not in self._peer]
        if unknown:
            raise UsageError(f"{self.prefix}{name} has no parameter {unknown[0]!r}; it takes: "
                             f"{', '.join([*self._peer, *[o for o in OWN if o not in self._peer]])}")

    @classmethod
    def class_norms(cls, peer) -> tuple[str, ...]:
        return NORMS

    def defaults(self) -> dict:
        """The library's constructor defaults, overridden by the parameters set (for run.json)."""
        out = {k: p.default for k, p in self._peer.items()
               if p.default is not inspect.Parameter.empty and k not in ("seed", "n_classes")}  # drawn / read
        out.update(self.params)
        return {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool, type(None), tuple))}

    def describe(self, budget: Budget | None = None) -> dict:
        lib = _import(self.library)
        at = {"norm": budget.norm, "eps": budget.eps} if budget is not None else {}
        return {"library": self.library, "library_version": getattr(lib, "__version__", "?"), "class": self.name,
                **at, "targeted": self.targeted, "target": self.target, "project": self.project, "threat": self.threat,
                **{f"param.{k}": v for k, v in sorted(self.defaults().items())}}

    def finish(self, x_adv: torch.Tensor, x: torch.Tensor, budget: Budget) -> torch.Tensor:
        """Back on x's device and dtype; with ``project``, samples outside B_eps(x) ∩ [0,1] are projected."""
        x_adv = x_adv.detach().to(device=x.device, dtype=x.dtype)
        if self.project:
            flat = x_adv.flatten(1)
            out = (flat_norm(x_adv - x, budget.norm) > budget.eps) | (flat < 0).any(1) | (flat > 1).any(1)
            if out.any():
                x_adv = x_adv.clone()
                x_adv[out] = project(x_adv[out], x[out], budget.norm, budget.eps)
        return x_adv
