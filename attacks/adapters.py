"""Any torchattacks or Foolbox attack, by name: ``ta.<Class>`` (e.g. ta.PGD, ta.CW) and ``fb.<Class>`` (fb.LinfPGD).

A few common names are registered up front (so ``harness list attacks`` shows them with their parameters);
every other class of either library resolves on first use through ``ATTACKS.resolvers``.  The parameters
of a ``ta.``/``fb.`` entry are the library class's own constructor parameters with the library's own
defaults (e.g. torchattacks' PGD: 10 steps of 2/255), settable with ``--set ta.PGD.steps=20``, plus
``norm``/``eps`` (the harness budget, passed as the library's eps), ``targeted``/``target`` and ``project``.

- torchattacks: ``cls(model, eps=eps, **params)``; ``norm`` goes to classes that take one ('Linf'/'L2'),
  ``n_classes`` is read from the model, and a ``seed`` parameter (APGD, FAB, Square, AutoAttack) that is
  not set is drawn from torch's global generator, which the engine seeds per cell (as are the
  library's own random starts).  Both libraries run on the model's device (that of its first parameter or
  buffer; the input's when it has none) and the images come back on the input's.
- Foolbox: ``attack(fb.PyTorchModel(model, bounds=(0, 1), device=x.device), x, y, epsilons=[eps])``, and
  the clipped images are returned: for minimization attacks (CW, DeepFool, Boundary, ...) Foolbox projects
  the found perturbation onto the eps-ball.  Attacks that take a distance get the budget's norm.
  A few Foolbox attacks draw from numpy's generator: for the call it is seeded from torch's generator
  (peeked without advancing it, so Foolbox's torch draws are those of a direct call) and then restored.
- ``project`` (default on): images a torchattacks attack returns outside B_eps(x) (minimization attacks
  such as CW or DeepFool have no budget) are projected onto it, as Foolbox does; with ``project=false``
  they are returned as they are and the engine counts them invalid (defended).

Our models take [0, 1] images and normalise inside, so no library-side normalisation is set.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import io
import math
import typing
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from harness.core.attack import Attack
from harness.core.errors import UsageError
from harness.core.geometry import NORMS, flat_norm, project
from harness.core.registry import ATTACKS, parse_number

from .autoattack import AA_NORMS, draw_seed

PREFIXES = {"ta.": "torchattacks", "fb.": "foolbox"}
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


def _import(library: str):
    try:
        return importlib.import_module(library)
    except ImportError as err:
        raise UsageError(f"the {library} adapter needs {library} ({err}); pip install {library}") from None


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

    def __init__(self, name: str, norm: Literal["linf", "l2"] | None = None, eps: float = 0.0, **kw):
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
        self.set_budget(norm or self.norms[0], eps)
        self.params = {k: parse_value(v) for k, v in kw.items()}
        unknown = [k for k in self.params if k not in self._peer]
        if unknown:
            raise UsageError(f"{self.prefix}{name} has no parameter {unknown[0]!r}; it takes: "
                             f"{', '.join(['norm', 'eps', *self._peer, *[o for o in OWN if o not in self._peer]])}")

    @classmethod
    def class_norms(cls, peer) -> tuple[str, ...]:
        return NORMS

    def defaults(self) -> dict:
        """The library's constructor defaults, overridden by the parameters set (for run.json)."""
        out = {k: p.default for k, p in self._peer.items()
               if p.default is not inspect.Parameter.empty and k not in ("seed", "n_classes")}  # drawn / read
        out.update(self.params)
        return {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool, type(None), tuple))}

    def describe(self) -> dict:
        lib = _import(self.library)
        return {"library": self.library, "library_version": getattr(lib, "__version__", "?"), "class": self.name,
                "norm": self.norm, "eps": self.eps, "targeted": self.targeted, "target": self.target,
                "project": self.project, "threat": self.threat,
                **{f"param.{k}": v for k, v in sorted(self.defaults().items())}}

    def finish(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back on x's device and dtype; with ``project``, samples outside B_eps(x) ∩ [0,1] are projected."""
        x_adv = x_adv.detach().to(device=x.device, dtype=x.dtype)
        if self.project:
            flat = x_adv.flatten(1)
            out = (flat_norm(x_adv - x, self.norm) > self.eps) | (flat < 0).any(1) | (flat > 1).any(1)
            if out.any():
                x_adv = x_adv.clone()
                x_adv[out] = project(x_adv[out], x[out], self.norm, self.eps)
        return x_adv


class TorchattacksAttack(LibraryAttack):
    """A torchattacks attack: ``TorchattacksAttack("PGD", norm="linf", eps=0.1, steps=20, alpha=0.025)``."""

    library = "torchattacks"
    prefix = "ta."

    @classmethod
    def class_norms(cls, peer) -> tuple[str, ...]:
        params = inspect.signature(peer.__init__).parameters
        name = peer.__name__
        if "norm" in params:
            return NORMS
        if name in TA_LINF:
            return ("linf",)
        if name in TA_L2:
            return ("l2",)
        if any(e in params for e in TA_EPS_NAMES):
            return ("l2",) if "L2" in name else ("linf",)
        return NORMS

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
        x, y = x.detach(), y.detach()
        if len(x) == 0:
            return x.clone()
        device = _device(model, x)
        module = _Forward(model)
        sig = inspect.signature(self._cls.__init__).parameters
        kwargs = dict(self.params)
        for e in TA_EPS_NAMES:
            if e in sig:
                kwargs[e] = self.eps
        if "norm" in sig:
            kwargs["norm"] = AA_NORMS[self.norm]
        if "n_classes" in sig and kwargs.get("n_classes") is None:
            kwargs["n_classes"] = _num_classes(model, x.to(device))
        if "seed" in sig and kwargs.get("seed") is None:
            kwargs["seed"] = draw_seed()
        with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device": _Forward has no parameters
            try:
                atk = self._cls(module, **kwargs)
            except TypeError as err:
                raise UsageError(f"ta.{self.name}: {err}") from None
        atk.set_device(device)  # torchattacks moves the images there and returns them there
        if self.targeted:
            if "targeted" not in atk.supported_mode:
                raise UsageError(f"ta.{self.name} has no targeted mode")
            if self.target == "least":
                atk.set_mode_targeted_least_likely(quiet=True)
            else:
                atk.set_mode_targeted_random(quiet=True)
        return self.finish(atk(x.to(device), y.to(device)), x)


class FoolboxAttack(LibraryAttack):
    """A Foolbox attack: ``FoolboxAttack("LinfPGD", eps=0.1, steps=20, abs_stepsize=0.025)``."""

    library = "foolbox"
    prefix = "fb."

    def __init__(self, name: str, norm: Literal["linf", "l2"] | None = None, eps: float = 0.0, **kw):
        super().__init__(name, norm=norm, eps=eps, **kw)
        self._attack = self._build()

    @classmethod
    def class_norms(cls, peer) -> tuple[str, ...]:
        params = inspect.signature(peer.__init__).parameters
        if "distance" in params or "constraint" in params:
            return NORMS
        distance = None
        try:
            distance = peer().distance
        except Exception:  # noqa: BLE001 - needs arguments, or has no distance: look at the class
            for k in peer.__mro__:
                if "distance" in k.__dict__ and not isinstance(k.__dict__["distance"], property):
                    distance = k.__dict__["distance"]
                    break
        p = getattr(distance, "p", None)
        if p is None:
            return NORMS
        if p == math.inf:
            return ("linf",)
        if p == 2:
            return ("l2",)
        raise UsageError(f"fb.{peer.__name__} works in the L{p:g} norm; the harness budgets are linf or l2")

    def _build(self):
        fb = _import("foolbox")
        kwargs = dict(self.params)
        params = inspect.signature(self._cls.__init__).parameters
        if "distance" in params:
            kwargs["distance"] = {"linf": fb.distances.linf, "l2": fb.distances.l2}[self.norm]
        if "constraint" in params and "constraint" not in self.params:
            kwargs["constraint"] = self.norm
        try:
            return self._cls(**kwargs)
        except (TypeError, ValueError, AssertionError) as err:
            raise UsageError(f"fb.{self.name}: {err}") from None

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
        fb = _import("foolbox")
        x_in = x.detach()
        if len(x_in) == 0:
            return x_in.clone()
        device = _device(model, x_in)
        x, y = x_in.to(device), y.detach().to(device)
        module = _Forward(model)
        criterion: Any = y
        if self.targeted:
            with torch.no_grad():
                logits = model(x)
            if self.target == "least":
                t = logits.argmin(1)
            else:
                t = (y + torch.randint(1, logits.shape[1], y.shape, device=y.device)) % logits.shape[1]
            criterion = fb.criteria.TargetedMisclassification(t)
        fmodel = fb.PyTorchModel(module, bounds=(0, 1), device=device)
        with torch.random.fork_rng(devices=[]):  # peeked, not consumed: Foolbox's own draws stay as if called directly
            numpy_seed = draw_seed()
        state = np.random.get_state()
        np.random.seed(numpy_seed)
        try:
            _, clipped, _ = self._attack(fmodel, x, criterion, epsilons=[self.eps])
        finally:
            np.random.set_state(state)
        return self.finish(clipped[0], x_in)


# ----------------------------------------------------------------------------------------- registration
def _annotation(p: inspect.Parameter) -> Any:
    """A ``--set`` type for a library parameter: bool, a Literal of strings, else Value (parsed by content)."""
    if isinstance(p.default, bool):
        return bool
    ann = p.annotation
    args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, Literal) else ()
    if typing.get_origin(ann) is typing.Union and args and all(typing.get_origin(a) is Literal for a in args):
        args = tuple(v for a in args for v in typing.get_args(a))
    if args and all(isinstance(v, str) for v in args):
        return Literal[args]
    return Value


def make_factory(prefix: str, name: str) -> type:
    """A registry factory for ``prefix + name``: a subclass of the adapter whose signature lists the class's parameters."""
    base = TorchattacksAttack if prefix == "ta." else FoolboxAttack
    peer = _peer_class(base.library, name)
    norms = base.class_norms(peer)
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD),
              P("norm", P.KEYWORD_ONLY, default=None, annotation=typing.Optional[Literal[norms]]),
              P("eps", P.KEYWORD_ONLY, default=0.0, annotation=float)]
    peer_params = _peer_params(peer)
    for n, p in peer_params.items():
        default = None if p.default is P.empty or n in ("seed", "n_classes") else p.default
        params.append(P(n, P.KEYWORD_ONLY, default=default, annotation=_annotation(p)))
    own = {"targeted": (False, bool), "target": ("random", Literal["random", "least"]), "project": (True, bool),
           "threat": (None, typing.Optional[str])}
    for n, (default, ann) in own.items():
        if n not in peer_params:
            params.append(P(n, P.KEYWORD_ONLY, default=default, annotation=ann))
    params.append(P("extra", P.VAR_KEYWORD))

    def __init__(self, **kw):
        base.__init__(self, name, **kw)

    __init__.__signature__ = inspect.Signature(params)
    __init__.__annotations__ = {p.name: p.annotation for p in params[1:-1]}
    doc = (inspect.getdoc(peer) or "").strip().split("\n")[0].strip() or name
    norm_text = "/".join(n.capitalize() if n == "l2" else "Linf" for n in norms)
    description = f"{base.library} {name} ({norm_text}): {doc}"
    return type(f"{prefix}{name}", (base,), {"__init__": __init__, "norms": norms, "__doc__": description,
                                             "__module__": __name__})


def _resolver(prefix: str):
    def resolve(full: str):
        return make_factory(prefix, full[len(prefix):])
    return resolve


COMMON = ("ta.PGD", "ta.PGDL2", "ta.FGSM", "ta.CW", "ta.APGD", "ta.APGDT", "ta.DeepFool", "ta.Square", "ta.FAB",
          "ta.MIFGSM", "ta.EOTPGD", "fb.LinfPGD", "fb.L2PGD", "fb.FGSM", "fb.FGM", "fb.L2CarliniWagnerAttack",
          "fb.LinfDeepFoolAttack", "fb.L2DeepFoolAttack", "fb.DDNAttack", "fb.BoundaryAttack")

def register_common() -> None:
    """Register the COMMON names, so that ``harness list attacks`` shows them with their parameters.  Run when the
    registry is listed, not on import: introspecting them imports torchattacks and Foolbox (seconds)."""
    for name in COMMON:
        if name in ATTACKS:
            continue
        try:
            ATTACKS.register(name)(make_factory(name[:3], name[3:]))
        except UsageError:  # the library is not installed: the name fails with its message when used
            pass


for _prefix in PREFIXES:
    ATTACKS.resolvers[_prefix] = _resolver(_prefix)
ATTACKS.listers.append(register_common)
