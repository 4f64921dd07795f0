"""``RunSpec``: one immutable, hashable value that *is* a run.

The command line parses argv into one (``harness.commands.run``), a grid cell is one (``harness.grid``), Python
builds one directly (``harness.evaluate``), and ``harness.build.build(spec)`` assembles the run for all three.
``run.json`` holds ``spec.to_dict()``, so ``RunSpec.from_dict`` (``harness run --from runs/<hash>/run.json``)
rebuilds any run from its run.json alone.

What a spec names, and nothing else: where the model comes from (``ModelRef``), where the data comes from and
which samples (``DataRef``), each defense and attack with the parameters given for it (``PluginSpec``), the norm,
the budgets, the seed and how to compute (device, precision, batch size).  Parameters are *resolved* values
(``--set`` already parsed against each plugin's signature, parts by path: ``{"inner": "ta.CW", "inner.c": 10.0}``).
The config hash is taken over the spec and the content of what it names (the model's weights, the data): see
``harness.build.config_hash``.  Imports nothing of the project but the floor.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from harness.core.errors import UsageError

SUBSETS = ("stratified", "first")


def _freeze(v: Any) -> Any:
    """JSON-ish values made hashable: lists become tuples (recursively)."""
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(i) for i in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _freeze(i)) for k, i in v.items()))
    return v


def _params(d: dict | tuple | None) -> tuple[tuple[str, Any], ...]:
    items = d.items() if isinstance(d, dict) else (d or ())
    return tuple(sorted((str(k), _freeze(v)) for k, v in items))


@dataclass(frozen=True)
class PluginSpec:
    """A defense or attack of the run: its registered ``name``, the ``params`` given for it (sorted pairs; what is
    not given keeps the plugin's default or follows the run's budget) and its display ``label`` (None: the name)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    label: str | None = None

    @classmethod
    def of(cls, name: str, params: dict | None = None, label: str | None = None) -> "PluginSpec":
        return cls(name, _params(params), None if label == name else label)

    @property
    def shown(self) -> str:
        """The name in the result rows."""
        return self.label or self.name

    @property
    def identity(self) -> str:
        """What the plugin *is*: its name and the parameters given for it, never its label.  A cell's seed derives
        from it, so relabelling a column changes no number (and an instance with no parameters given is seeded
        by its name alone, as before labels existed)."""
        if not self.params:
            return self.name
        return self.name + json.dumps(dict(self.params), sort_keys=True, default=str, separators=(",", ":"))

    def kwargs(self) -> dict:
        return dict(self.params)


@dataclass(frozen=True)
class ModelRef:
    """Where the classifier comes from: a zoo name; a checkpoint path with ``arch``; a factory ``file.py:fn`` or
    ``package.module:fn`` called with ``args`` (optionally loading ``weights``); ``None`` the dataset's default
    model; ``"<python>"`` an ``nn.Module`` handed to ``harness.evaluate`` (not rebuildable from the spec alone).
    ``arch_params``: ``--set`` values of the architecture; ``normalize``: ``mean=...,std=...`` of a normaliser
    the model does not hold itself."""

    ref: str | None = None
    arch: str | None = None
    args: tuple[tuple[str, Any], ...] = ()
    weights: str | None = None
    normalize: str | None = None
    arch_params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class DataRef:
    """Where the images come from (a dataset name, an ``.npz`` / ``.pt`` file or an image folder; ``"<python>"``
    for arrays handed to ``harness.evaluate``) and which of them are evaluated.

    ``n`` None: all.  ``subset``: ``stratified`` (default: a class-stratified draw seeded by ``subset_seed``, in
    dataset order) or ``first`` (the first n); ``indices``: a file of the user's own indices (one per line).
    ``scale``: divide pixel values by it (255 for uint8 images); ``resize`` / ``crop``: image folders."""

    name: str = "digits"
    split: str | None = None
    data_dir: str | None = None
    n: int | None = None
    subset: str = "stratified"
    subset_seed: int = 0
    indices: str | None = None
    scale: float | None = None
    resize: int | None = None
    crop: int | None = None
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RunSpec:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataRef = field(default_factory=DataRef)
    defenses: tuple[PluginSpec, ...] = (PluginSpec("none"),)
    attacks: tuple[PluginSpec, ...] = (PluginSpec("pgd_linf"),)
    norm: str | None = None  # None: the attacks' own norm
    eps: tuple[float, ...] | None = None  # None: the dataset's default budget for the norm
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int | str | None = None  # None: 500; "auto": probe the device
    passes: int = 10
    fidelity_n: int | None = None
    samples: bool = True

    def __post_init__(self):
        if self.data.subset not in SUBSETS:
            raise UsageError(f"--subset must be one of {', '.join(SUBSETS)}, got {self.data.subset!r}")
        labels = [p.shown for p in self.defenses], [p.shown for p in self.attacks]
        for kind, shown in zip(("--defense", "--attack"), labels):
            twice = sorted({s for s in shown if shown.count(s) > 1})
            if twice:
                raise UsageError(f"{kind} {twice[0]} is given twice; give the second a label of its own "
                                 f"({kind} LABEL={twice[0]})")

    def replace(self, **changes) -> "RunSpec":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-able data (``from_dict`` inverts it)."""
        d = asdict(self)
        for part in ("model", "data"):
            d[part] = {k: dict(v) if k in ("args", "arch_params", "params") else v for k, v in d[part].items()}
        for kind in ("defenses", "attacks"):
            d[kind] = [{"name": p["name"], "params": dict(p["params"]), **({"label": p["label"]} if p["label"] else {})}
                       for p in d[kind]]
        d["eps"] = list(self.eps) if self.eps is not None else None
        return json.loads(json.dumps(d, default=_jsonable))

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        try:
            model = ModelRef(**{k: _params(v) if k in ("args", "arch_params") else v for k, v in d["model"].items()})
            data = DataRef(**{k: _params(v) if k == "params" else v for k, v in d["data"].items()})
            plugins = {kind: tuple(PluginSpec(p["name"], _params(p.get("params")), p.get("label"))
                                   for p in d[kind]) for kind in ("defenses", "attacks")}
            rest = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name not in ("model", "data", *plugins)}
        except (KeyError, TypeError) as e:
            raise UsageError(f"not a run spec (run.json's 'spec'): {type(e).__name__}: {e}") from None
        if rest.get("eps") is not None:
            rest["eps"] = tuple(float(e) for e in rest["eps"])
        return cls(model=model, data=data, **plugins, **rest)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return str(v)
