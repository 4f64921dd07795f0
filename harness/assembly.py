"""Assembly: building a run's parts from the command line once, for ``run``, ``certify``, ``train`` and the scripts.

Device, model (zoo name or checkpoint), architecture, budget norm, plugins with their ``--set`` overrides and the
context a defense that trains on first use learns from the run; and the checks of the flags they take.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .core.budget import Budget
from .core.defense import RunContext
from .core.errors import UsageError
from .core.registry import ATTACKS, DEFENSES, MODELS, ZOO
from .entrants import Entrant
from .models.checkpoint import load_checkpoint
from .models.zoo import load_zoo


def require_positive(**flags) -> None:
    """A UsageError naming the first flag (``batch_size`` is ``--batch-size``) that is set and not >= 1."""
    for key, value in flags.items():
        if value is not None and value < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")


def pick_device(name: str):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device expects auto, cpu or cuda[:i], got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return dev


def load_model(model: str | None, arch: str | None, data, overrides, device, data_dir: str | None = None):
    """A zoo name, or a checkpoint path with --arch; returns (module, display name)."""
    name = model or data.default_model
    if name is None:
        raise UsageError(f"{data.name} has no default model; pass --model NAME (see 'harness list zoo') or --model PATH --arch ARCH")
    check_model(name, arch)
    if name in ZOO and arch is None:
        return load_zoo(name, device, data_dir=data_dir), name
    net = load_checkpoint(build_arch(arch, data, overrides)[0], name, arch)
    return net.to(device).eval(), Path(name).stem


def check_model(name: str, arch: str | None) -> None:
    """--model is a zoo name, or an existing checkpoint file with --arch: a UsageError saying which is wrong."""
    if name in ZOO and arch is None:
        return
    if name in MODELS and not os.path.exists(name):
        raise UsageError(f"{name} is an architecture, not a trained model; pass --model PATH --arch {name}")
    if not os.path.exists(name):
        if arch is not None:
            raise UsageError(f"checkpoint {name} not found")
        if os.sep in name or Path(name).suffix in (".pt", ".pth", ".ckpt", ".bin"):
            raise UsageError(f"--model {name}: no such file (and not a zoo name; see 'harness list zoo')")
        ZOO.get(name)  # unknown name: fails with the closest zoo names
    if arch is None:
        raise UsageError(f"--model {name} is a checkpoint path: pass --arch (one of {', '.join(MODELS.list())})")
    MODELS.get(arch)


def build_arch(arch: str, data, overrides):
    """An untrained ``arch`` sized for ``data`` (classes, channels, image size), with --set overrides."""
    entry = MODELS.get(arch)
    kw = {"num_classes": data.num_classes, "in_channels": data.x.shape[1], "image_size": data.x.shape[-1]}
    kw = {k: v for k, v in kw.items() if k in entry.params}
    kw.update(overrides.for_plugin(MODELS, arch))
    return MODELS.create(arch, **kw), kw


def resolve_norm(args, attack_entries) -> str:
    if args.norm is not None:
        norm = args.norm.lower()
        if norm not in ("linf", "l2"):
            raise UsageError(f"--norm must be linf or l2, got {args.norm!r}")
        return norm
    for entry in attack_entries:
        norms = entry.declared("norms", ())
        if len(norms) == 1:
            return norms[0]
    return "linf"


def build_plugins(registry, instances, overrides, fixed: dict | None = None):
    """Create each plugin, a (label, name) pair (``config.parse_instances``), with its --set overrides over the
    ``fixed`` keywords it takes.  Returns (label, plugin) pairs."""
    built = []
    for label, name in instances:
        entry = registry.get(name)
        kw = {k: v for k, v in (fixed or {}).items() if k in entry.params}
        kw.update(overrides.for_plugin(registry, name, label))
        built.append((label, registry.create(name, **kw)))
    return built


BUDGET_WORDS = ("eps", "norm")


def refuse_budget_sets(raw: dict[str, str], instances) -> None:
    """``--set eps=`` / ``--set ATTACK.eps=`` (or ``norm``): a usage error, the budget being the run's."""
    scopes = {s for pair in instances for s in pair}
    for key in raw:
        path = key.split(".")
        if path[-1] in BUDGET_WORDS and (len(path) == 1 or path[0] in scopes):
            raise UsageError(f"--set {key}: an attack's budget is the run's, not a parameter; use --{path[-1]} "
                             f"(e.g. --{path[-1]} {raw[key]})")


def build_attacks(instances, overrides, budget: Budget) -> list:
    """Each attack, a (label, name) pair, with its --set overrides; (label, attack) pairs.  The budget is the run's
    (``--eps``, ``--norm``) and goes with each call, never into an attack: a --set of an attack's eps or norm is a
    usage error, and so is an attack that does not work in the run's norm."""
    refuse_budget_sets(overrides.raw, instances)
    built = build_plugins(ATTACKS, instances, overrides)
    for _, attack in built:
        attack.supports(budget)
    return built


def build_defenses(instances, overrides, norm: str, eps_list: list[float], context: RunContext) -> list:
    """Each defense (a (label, name) pair) as an ``Entrant`` evaluated at every budget of the run: built once, or,
    where parameters of it follow the budget (``Defense.follows_budget``, not given by --set: preempt's delta = eps)
    and there are several budgets, once per budget; with the run's facts it declares it receives
    (``Defense.receives``).  Built here, so that a bad parameter fails before the run."""
    budgets = [Budget(norm, e) for e in eps_list]
    built = []
    for label, name in instances:
        entry = DEFENSES.get(name)
        given = overrides.for_plugin(DEFENSES, name, label)
        follows = [p for p in entry.declared("follows_budget", ()) if p in entry.params]
        base = {k: v for k, v in context.for_defense(entry.declared("receives", ())).items() if k in entry.params}

        def build(budget: Budget, name=name, follows=follows, base=base, given=given):
            at = {p: budget.norm if p == "norm" else budget.eps for p in follows}
            return DEFENSES.create(name, **{**base, **at, **given})

        entrant = Entrant(budgets, build, per_budget=bool(set(follows) - {"norm"} - set(given)))
        entrant.served()
        built.append((label, entrant))
    return built


def describe(entrant) -> dict:
    """A defense's resolved parameters; for one built per budget, the parameters that vary as lists."""
    return entrant.describe()


def defense_context(args, data) -> RunContext:
    """What a defense that trains on first use learns from the run unless --set says otherwise: the dataset,
    where its files lie, and (for purifiers) the zoo model it will stand in front of as ``target``."""
    name = args.model or data.default_model
    return RunContext(args.dataset, args.data_dir, name if args.arch is None and name in ZOO else None)


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


