"""``build(spec)``: the one place a run is assembled, for the command line, the grid and Python alike.

A ``RunSpec`` names a model, data, plugins and settings; ``build`` loads and checks them (every bad input a
one-line ``UsageError`` before any work), fixes the budgets, the batch size and the config hash, and returns a
``Run``; ``Run.execute()`` evaluates it and returns ``Results`` (``harness.results``).

The config hash covers the spec (less what cannot change a number: device, fidelity sample, samples file) **and the
content it names**: the model's weights (``model_sha256``, over the state dict, so a renamed file of the same weights
is the same model and other weights under the same name are not) and the evaluated data (``data_fingerprint``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from harness.core.attack import Attack
from harness.core.budget import Budget
from harness.core.errors import UsageError
from harness.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS

from .data.base import ImageSet
from .data.files import check_model_fits
from .data.subset import fingerprint, indices_hash, select
from .entrants import Entrant
from .spec import PluginSpec, RunSpec

UNHASHED = ("device", "fidelity_n", "samples")
PYTHON = "<python>"  # what a spec names where an object was handed in from Python (not rebuildable from run.json)


class SpecOverrides:
    """The resolved parameters of a spec's plugins, in the shape the plugin builders ask for (``for_plugin``)."""

    raw: dict = {}  # no --set strings here: the spec holds the resolved values (budget words were refused before)

    def __init__(self, spec: RunSpec):
        self._by = {(DEFENSES.kind, p.shown): p.kwargs() for p in spec.defenses}
        self._by.update({(ATTACKS.kind, p.shown): p.kwargs() for p in spec.attacks})
        self._by[(MODELS.kind, spec.model.arch)] = dict(spec.model.arch_params)

    def for_plugin(self, registry, name: str, label: str | None = None) -> dict:
        return dict(self._by.get((registry.kind, label or name), {}))


def model_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes, in key order: the weights' identity, whatever
    file (or none) they came from."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def config_hash(spec: RunSpec, model_digest: str, data_digest: str) -> str:
    d = {k: v for k, v in spec.to_dict().items() if k not in UNHASHED}
    # Where the weights came from (a zoo name, a file, a factory, a Python object) is not hashed: their content is.
    d["model"] = {k: v for k, v in d["model"].items() if k not in ("ref", "args", "weights")}
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("data_dir",)}
    text = json.dumps({"spec": d, "model_sha256": model_digest, "data_fingerprint": data_digest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Run:
    """A built run: everything ``evaluate`` needs, and what the report says of it."""

    spec: RunSpec
    model: torch.nn.Module
    model_name: str
    data: ImageSet
    indices: torch.Tensor | None
    subset_rule: str
    defenses: list
    attacks: list
    identities: dict[str, str]
    norm: str
    eps_list: list[float]
    device: torch.device
    amp: object
    batch_size: int
    batching: dict | None
    model_sha256: str
    data_fingerprint: str
    config_hash: str
    config: dict = field(default_factory=dict)

    def execute(self, argv: list[str] | None = None):
        """Evaluate every cell (and, at a low precision, the fp32 fidelity check) and return ``Results``."""
        from .assembly import describe, device_name
        from .engine import evaluate
        from .precision import FIDELITY_N, fidelity_check
        from .report import environment
        from .results import Results

        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        several = self.eps_list if len(self.eps_list) > 1 else None
        kw = dict(batch_size=self.batch_size, seed=self.spec.seed, device=self.device, passes=self.spec.passes,
                  eps=several, identities=self.identities)
        results = evaluate(self.model, self.data, self.defenses, self.attacks, amp=self.amp, **kw)
        fid_n = FIDELITY_N if self.spec.fidelity_n is None else self.spec.fidelity_n
        fidelity, fid_warnings = fidelity_check(results, lambda m: evaluate(self.model, self.data.take(m), self.defenses,
                                                                            self.attacks, **kw),
                                                self.spec.precision, len(self.data), fid_n)
        meta = {"dataset": self.data.name, "model": self.model_name, "seed": self.spec.seed,
                "config_hash": self.config_hash, "note": self.data.note or self.data.name,
                "model_sha256": self.model_sha256, "data_fingerprint": self.data_fingerprint,
                "subset": self.subset_rule,
                **({"warnings": fid_warnings} if fid_warnings else {})}
        # A defense that trains (or loads) its networks on first use knows where they came from only now.
        config = {**self.config, "defenses": [{"name": n, **describe(d)} for n, d in self.defenses]}
        run_info = {"spec": self.spec.to_dict(), "config": config, "config_hash": self.config_hash,
                    "seed": self.spec.seed, "argv": ["harness", *argv] if argv is not None else None,
                    "model_sha256": self.model_sha256, "data_fingerprint": self.data_fingerprint,
                    "subset": {"rule": self.subset_rule, "n": len(self.data),
                               "indices_sha256": None if self.indices is None else indices_hash(self.indices)},
                    "device": device_name(self.device), "data_note": self.data.note, "started": started,
                    "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **environment(),
                    "precision": self.spec.precision, **({"fidelity": fidelity} if fidelity else {}),
                    **({"batching": self.batching} if self.batching else {})}
        gradients = {n: a.gradients for n, a in self.attacks if not a.certifies}
        return Results.from_run(results, self.data.y, meta, run_info, gradients=gradients, samples=self.spec.samples,
                                indices=self.indices)


def build(spec: RunSpec, model: torch.nn.Module | None = None, data: ImageSet | None = None,
          objects: dict | None = None) -> Run:
    """Assemble ``spec`` (with an ``nn.Module`` / ``ImageSet`` handed in from Python where it names ``"<python>"``,
    and ``objects``: label -> a defense or attack object for the plugins it names ``"<python>:CLASS"``)."""
    from harness.core.defense import RunContext

    from .assembly import (build_attacks, build_defenses, defense_context, describe, pick_device, require_positive,
                           resolve_norm)
    from .batching import probe_batch_size
    from .config import RunConfig
    from .precision import autocast_for

    objects = objects or {}
    given = {p.shown for p in (*spec.defenses, *spec.attacks) if p.name.startswith(PYTHON)}
    if given - set(objects):
        raise UsageError(f"{sorted(given - set(objects))[0]}: an object handed in from Python; pass it to build(objects=)")
    for p in spec.defenses:
        if p.shown not in objects:
            DEFENSES.get(p.name)
    attack_entries = [SimpleNamespace(declared=lambda cap, default=None, o=objects[p.shown]: getattr(o, cap, default))
                      if p.shown in objects else ATTACKS.get(p.name) for p in spec.attacks]
    require_positive(n=spec.data.n, batch_size=None if spec.batch_size == "auto" else spec.batch_size,
                     passes=spec.passes)
    if spec.fidelity_n is not None and spec.fidelity_n < 0:
        raise UsageError(f"--fidelity-n must be >= 0, got {spec.fidelity_n}")
    norm = resolve_norm(SimpleNamespace(norm=spec.norm), attack_entries)
    full = data if data is not None else load_data(spec)
    chosen, indices, rule = select(full, spec.data.n, spec.data.subset, spec.data.subset_seed, spec.data.indices)
    eps_list = list(spec.eps) if spec.eps is not None else [chosen.default_eps[norm]]
    device = pick_device(spec.device)
    amp = autocast_for(spec.precision, device)
    torch.manual_seed(spec.seed)
    overrides = SpecOverrides(spec)
    ctx_args = SimpleNamespace(dataset=spec.data.name, data_dir=spec.data.data_dir,
                               model=spec.model.ref if spec.model.ref != PYTHON else None, arch=spec.model.arch)
    context = defense_context(ctx_args, chosen) if data is None else RunContext(chosen.name, None, None)
    budgets = [Budget(norm, e) for e in eps_list]
    defenses = dict(build_defenses([(p.shown, p.name) for p in spec.defenses if p.shown not in objects], overrides,
                                   norm, eps_list, context))
    attacks = dict(build_attacks([(p.shown, p.name) for p in spec.attacks if p.shown not in objects], overrides,
                                 budgets[0]))
    for label, obj in objects.items():
        if isinstance(obj, Attack):
            obj.supports(budgets[0])
            attacks[label] = obj
        else:
            defenses[label] = Entrant.fixed(obj, budgets)
    defenses = [(p.shown, defenses[p.shown]) for p in spec.defenses]
    attacks = [(p.shown, attacks[p.shown]) for p in spec.attacks]
    if model is None:
        model, model_name = load_spec_model(spec, chosen, device)
    else:
        model, model_name = model.to(device).eval(), type(model).__name__
    check_model_fits(chosen, model, device)
    batch_size, batching = (probe_batch_size(model, chosen.x, chosen.y, device, amp) if spec.batch_size == "auto"
                            else (spec.batch_size or 500, None))
    m_sha, d_fp = model_sha256(model), fingerprint(chosen)
    resolved = spec.replace(batch_size=batch_size, norm=norm, eps=tuple(eps_list),
                            data=replace(spec.data, n=None if rule == "all" else len(chosen)))
    digest = config_hash(resolved, m_sha, d_fp)
    identities = {p.shown: p.identity for p in (*spec.defenses, *spec.attacks)}
    cfg = RunConfig(dataset=chosen.name, model=model_name, arch=spec.model.arch,
                    defenses=[{"name": n, **describe(d)} for n, d in defenses],
                    attacks=[{"name": n, **a.describe(Budget(norm, eps_list[0]))} for n, a in attacks], norm=norm,
                    eps=eps_list[0] if len(eps_list) == 1 else eps_list, n=len(chosen), batch_size=batch_size,
                    seed=spec.seed, passes=spec.passes, split=spec.data.split or "test", data_dir=spec.data.data_dir,
                    device=str(device), extra={"precision": spec.precision} if amp else {})
    return Run(spec, model, model_name, chosen, indices, rule, defenses, attacks, identities, norm, eps_list, device,
               amp, batch_size, batching, m_sha, d_fp, digest, cfg.as_dict())


def load_data(spec: RunSpec) -> ImageSet:
    """The dataset a spec names: a registered dataset, or a file / folder of the user's."""
    from .data import load

    d = spec.data
    if d.name == PYTHON:
        raise UsageError("this spec's data was handed in from Python; pass it to build(spec, data=...)")
    folder = {k: v for k, v in (("resize", d.resize), ("crop", d.crop)) if v is not None}  # image folders
    if d.name in DATASETS:
        return load(d.name, d.split or "test", d.data_dir, **dict(d.params), **folder)
    if os.path.isfile(d.name):
        from .data.files import load_file

        return load_file(d.name, scale=d.scale)
    if os.path.isdir(d.name):
        return load("imagefolder", d.split or "test", d.name, **folder)
    DATASETS.get(d.name)  # unknown: fails with the closest names
    raise AssertionError


def load_spec_model(spec: RunSpec, data: ImageSet, device) -> tuple[torch.nn.Module, str]:
    """The classifier a ``ModelRef`` names, on ``device``, in eval mode; and its display name."""
    from .assembly import load_model
    from .models.user import is_factory_ref, load_factory

    m = spec.model
    if m.ref == PYTHON:
        raise UsageError("this spec's model was handed in from Python; pass it to build(spec, model=...)")
    wrap = None
    if m.normalize is not None:
        from .models.normalize import NormalizedModel, parse_normalize

        mean, std = parse_normalize(m.normalize)
        wrap = lambda net: NormalizedModel(net, mean, std)  # noqa: E731
    if m.ref is not None and is_factory_ref(m.ref):
        net = load_factory(m.ref, dict(m.args))
        name = type(net).__name__  # as harness.evaluate names a module handed in
        net = wrap(net) if wrap else net  # wrapped first: a checkpoint may carry the normaliser's stats too
        if m.weights is not None:
            from .models.checkpoint import load_weights

            net, name = load_weights(net, m.weights), Path(m.weights).stem
        return net.to(device).eval(), name
    if m.args or m.weights:
        raise UsageError("--model-arg and --weights go with --model FILE.py:FACTORY or package.module:FACTORY")
    overrides = SimpleNamespace(for_plugin=lambda registry, name, label=None: dict(m.arch_params))
    net, name = load_model(m.ref, m.arch, data, overrides, torch.device("cpu"), spec.data.data_dir)
    return (wrap(net) if wrap else net).to(device).eval(), name


def plugin_specs(instances: list[tuple[str, str]], registry, overrides) -> tuple[PluginSpec, ...]:
    """(label, name) pairs with the ``--set`` values that reach each (``config.Overrides``) as ``PluginSpec``s."""
    return tuple(PluginSpec.of(name, overrides.for_plugin(registry, name, label), label) for label, name in instances)
