"""The registry factories of the adapters (``attacks.adapters``): ``make_factory("ta.", "PGD")`` is a subclass of the
adapter whose signature lists the library class's parameters.  Importing this module installs the ``ta.`` / ``fb.``
resolvers of ``ATTACKS`` and the lister that registers the ``COMMON`` names."""
from __future__ import annotations

import inspect
import typing
from typing import Any, Literal

from harness.core.errors import UsageError
from harness.core.registry import ATTACKS

from .foolbox_adapter import FoolboxAttack
from .library import PREFIXES, Value, _peer_class, _peer_params
from .torchattacks_adapter import TorchattacksAttack


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
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
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
                                             "__module__": __package__})  # attacks.adapters


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
