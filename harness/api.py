"""The public Python API: your model, your data, in a few lines (docs/API.md).

    import harness
    model = harness.load_model("digits_cnn_adv")     # or any nn.Module from [0, 1] images to logits
    x, y = harness.load_data("digits")               # or any (x, y) tensors / numpy arrays in [0, 1]
    results = harness.evaluate(model, (x, y), attacks=["fgsm", "pgd_linf"], eps=0.1, n=100)
    print(results.table())

``evaluate`` builds a ``RunSpec`` and runs it through ``harness.build``, the same path as ``harness run``: the
numbers, rows and files are those of the command line for the same run.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from harness.core.attack import Attack
from harness.core.defense import Defense
from harness.core.errors import UsageError
from harness.core.progress import quieted
from harness.core.registry import ATTACKS, DEFENSES, Registry

from .build import PYTHON
from .config import split_label
from .data.base import ImageSet
from .results import Results, load_results
from .spec import DataRef, ModelRef, PluginSpec, RunSpec


def evaluate(model: torch.nn.Module | str | None, data: Any = "digits", *,
             defenses: Iterable = ("none",), attacks: Iterable = ("pgd_linf",),
             eps: float | Sequence[float] | None = None, norm: str | None = None, n: int | None = None,
             subset: str = "stratified", indices: str | None = None, seed: int = 0, device: str = "auto",
             batch_size: int | str | None = None, precision: str = "fp32", passes: int = 10,
             arch: str | None = None, weights: str | None = None, normalize: str | None = None,
             model_args: dict | None = None, split: str | None = None, data_dir: str | None = None,
             scale: float | None = None, samples: bool = True, out: str | None = None,
             quiet: bool = True) -> Results:
    """Evaluate ``model`` on ``data`` under every defense x attack x eps; robust accuracy is the worst case per
    sample over the attacks.

    ``model``: an ``nn.Module`` (from [0, 1] images to logits), a zoo name, a checkpoint path (with ``arch``), or
    ``"file.py:factory"`` / ``"package.module:factory"`` (called with ``model_args``, then ``weights`` loaded).
    ``data``: a dataset name (``"digits"``, ``"mnist"`` with ``data_dir``), a path (.npz, .pt, image folder),
    ``(x, y)`` tensors or numpy arrays in [0, 1] (``scale=255`` for uint8), a ``Dataset`` or ``DataLoader``, or an
    ``ImageSet``.  ``defenses`` / ``attacks``: names (``"pgd_linf"``, ``"dlr=pgd_linf"``), ``(name, params)`` pairs
    (``("pgd_linf", {"steps": 50})``), ``(label, name, params)`` triples, or objects that satisfy the contracts (a
    ``harness.core.attack.Attack`` / ``harness.core.defense.Defense``, alone or as ``(label, object)``; such a run
    is not rebuildable from its run.json).  ``eps``: one budget or several.
    ``n``: a seeded class-stratified draw of n samples (``subset="first"``: the first n).  ``out``: also write
    the run folder there (``Results.save``).  ``quiet``: no progress bars during this call; the process-wide switch
    (``harness.core.progress``) is as it was afterwards.
    """
    with quieted(quiet):  # the switch for this call only (harness.core.progress)
        module = model if isinstance(model, torch.nn.Module) else None
        objects: dict = {}
        ref = PYTHON if module is not None else model
        images = _data(data, scale)
        spec = RunSpec(
            ModelRef(ref, arch, tuple(sorted((model_args or {}).items())), weights, normalize),
            DataRef(PYTHON if images is not None else str(data), split, data_dir, n, subset, 0, indices,
                    scale if images is None else None),
            _plugins(DEFENSES, defenses, objects), _plugins(ATTACKS, attacks, objects), norm,
            None if eps is None else tuple(float(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)),
            seed, device, precision, batch_size, passes, None, samples)
        from .build import build

        results = build(spec, model=module, data=images, objects=objects).execute()
        if out is not None:
            results.save(out)
        return results


def load_model(name: str, *, arch: str | None = None, dataset: str = "digits", data_dir: str | None = None,
               device: str = "cpu") -> torch.nn.Module:
    """A zoo model (``harness list zoo``), a checkpoint path with ``arch``, or ``file.py:factory``, as an
    ``nn.Module`` in eval mode."""
    from .build import load_data, load_spec_model

    spec = RunSpec(ModelRef(name, arch), DataRef(dataset, data_dir=data_dir))
    return load_spec_model(spec, load_data(spec), torch.device(device))[0]


def load_data(name: str = "digits", *, split: str = "test", data_dir: str | None = None,
              n: int | None = None, subset: str = "stratified", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset's ``(x, y)``: images N x C x H x W in [0, 1] and integer labels (``n``: a stratified draw)."""
    from .build import load_data as load
    from .data.subset import select

    data = select(load(RunSpec(data=DataRef(name, split, data_dir))), n, subset, seed)[0]
    return data.x, data.y


def _data(data: Any, scale: float | None) -> ImageSet | None:
    """In-memory data as an ``ImageSet``; None for a name or path (the spec names it)."""
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        return None
    from .data.files import from_arrays, from_dataset

    if isinstance(data, (tuple, list)) and len(data) == 2:
        return from_arrays(data[0], data[1], scale=scale)
    if isinstance(data, Iterable) or hasattr(data, "__getitem__"):
        return from_dataset(data, scale=scale)
    raise UsageError(f"data must be a dataset name, a path, (x, y) arrays, a Dataset or a DataLoader; got {type(data).__name__}")


def _plugins(registry: Registry, items: Iterable, objects: dict) -> tuple[PluginSpec, ...]:
    """Names, ``LABEL=NAME``, ``(name, params)`` or ``(label, name, params)`` as ``PluginSpec``s, each name
    checked and each parameter checked against the plugin's signature (parts by path: ``"inner.steps"``); an
    ``Attack`` / ``Defense`` object (or ``(label, object)``) goes into ``objects`` under its label."""
    if isinstance(items, (str, Attack, Defense)) or (isinstance(items, tuple) and items and isinstance(items[-1], dict)):
        items = [items]  # one plugin given alone
    out = []
    for item in items:
        obj = item[1] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], (Attack, Defense)) else item
        if isinstance(obj, (Attack, Defense)):
            label = item[0] if obj is not item else type(obj).__name__
            objects[label] = obj
            out.append(PluginSpec(f"{PYTHON}:{type(obj).__name__}", (), label))
            continue
        if isinstance(item, str):
            (label, name), params = split_label(item), {}
        elif isinstance(item, tuple) and len(item) == 2:
            (name, params), label = item, item[0]
        elif isinstance(item, tuple) and len(item) == 3:
            label, name, params = item
        else:
            raise UsageError(f"a {registry.kind[:-1]} is a name, (name, params) or (label, name, params); got {item!r}")
        entry = registry.get(name)
        resolved = {}
        for key, value in (params or {}).items():
            param = entry.param(key, {k: v for k, v in params.items() if isinstance(v, str)})
            if param is None:
                raise UsageError(f"{name} has no parameter {key!r}; it takes: {', '.join(p for p, _ in entry.tree())}")
            resolved[key] = param.parse(value) if isinstance(value, str) else value
        out.append(PluginSpec.of(name, resolved, label))
    return tuple(out)


__all__ = ["evaluate", "load_model", "load_data", "load_results", "Results", "RunSpec"]
