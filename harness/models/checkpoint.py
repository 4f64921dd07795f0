"""Load a state-dict checkpoint into a built architecture, with one-line errors when it does not fit.

Only ``torch.load(..., weights_only=True)`` is used: a checkpoint is data (tensors in dicts), never code, so
a file that pickles a whole model is refused.  Common wrappings are undone: training checkpoints that keep
the weights under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net``, and key prefixes that every
key shares, such as ``module.`` (DataParallel), ``model.`` (wrappers) or ``_orig_mod.`` (torch.compile), and
normalising wrappers such as RobustBench's ``normalize.mean``/``normalize.std`` + ``model.*`` (or ``mu``/``sigma``),
also under ``module.``: the stored mean/std must then equal the normaliser's (the architecture's own, or the
outside one given with ``--normalize``, see normalize.py).

``load_weights`` takes any module (a user's factory, see user.py); ``load_checkpoint`` is the same for a
built-in architecture, named in its errors as ``arch NAME``.
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from harness.core.errors import UsageError

from .normalize import Normalized, NormalizedModel

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
SHOW = 3  # how many offending keys an error message names
STAT_NAMES = {"mean": "mean", "mu": "mean", "std": "std", "sigma": "std"}  # a normaliser's stats, as stored


def load_weights(module: nn.Module, path: str, what: str | None = None) -> nn.Module:
    """Load the weights in ``path`` into any ``module`` (a zoo architecture, a user factory's network, or a
    :class:`~harness.models.normalize.NormalizedModel` wrapping one) and return ``module`` in eval mode.

    The wrappings and prefixes of the module docstring are undone.  Normalisation stats stored in the file
    (``normalize.mean``/``normalize.std``, ``mu``/``sigma``, under any prefix) that the network does not hold as
    weights are checked against the module's own normaliser (the built-in architectures' ``mean``/``std``, an
    outside ``NormalizedModel``, or ``mean``/``std`` tensors the network keeps); a module with none is refused with
    the ``--normalize`` to give.  So with an outside normaliser, wrap first and load into the wrapper:
    ``load_weights(NormalizedModel(net, mean, std), path)``.  ``what`` names the module in errors (default
    ``model <class name>``); every error is one line naming the keys that did not match.
    """
    what = what or f"model {type(module).__name__}"
    target = module.model if isinstance(module, NormalizedModel) else module
    expected = target.state_dict()
    state, stats = _match_keys(_unwrap(_read(path), path), set(expected))
    state.update(_check_stats(stats, module, target, path, what))  # stats that are no normaliser: unexpected keys
    # TRADES-style WideResNets carry an unused ``sub_block1``; old checkpoints lack num_batches_tracked.
    state = {k: v for k, v in state.items() if not (k.startswith("sub_block1.") and k not in expected)}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} has shape {_shape(state[k])} in the file, {_shape(expected[k])} in the model"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        problems = shapes[:SHOW]
        if missing:
            problems.append(f"missing keys {_names(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_names(unexpected)}")
        raise UsageError(f"checkpoint {path} does not fit {what}: {'; '.join(problems)}")
    target.load_state_dict(state, strict=False)  # strict=False only for absent num_batches_tracked
    return module.eval()


def load_checkpoint(model: nn.Module, path: str, arch: str) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (built as ``arch``) and return it in eval mode."""
    return load_weights(model, path, f"arch {arch}")


def _read(path: str):
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint {path} not found" + (" (it is a directory)" if p.is_dir() else ""))
    with open(p, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save writes a zip archive (or, before 1.6, a pickle)
        raise UsageError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle; "
                         f"it starts with bytes {head.hex() or 'none: the file is empty'})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise UsageError(f"checkpoint {path} pickles Python objects (a whole model?), which are not loaded "
                             "because unpickling can run code; save and pass model.state_dict() instead") from None
        raise UsageError(f"{path} is not a PyTorch checkpoint ({_why(e)})") from None
    except Exception as e:  # noqa: BLE001 - torch raises KeyError, EOFError, RuntimeError, ... on junk
        raise UsageError(f"{path} is not a PyTorch checkpoint ({_why(e)})") from None


def _unwrap(obj, path: str) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise UsageError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UsageError(f"checkpoint {path} holds no tensors (top-level keys: {_names(list(obj))})")
    return tensors


def _match_keys(state: dict, expected: set[str]) -> tuple[dict, dict]:
    """Split ``state`` into the weights (keys renamed to fit ``expected``) and normalisation stats outside them.

    Stats (keys ending in ``mean``/``std``/``mu``/``sigma``, never BatchNorm's ``running_mean``) are set aside
    before the shared prefixes are stripped, so ``module.normalize.mean`` beside ``module.model.<keys>`` (a
    DataParallel-wrapped normalising wrapper) strips to the model's keys; a stat the network itself holds as a
    weight (a persistent ``mu`` buffer) goes back with the same prefix dropped.
    """
    stats = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in STAT_NAMES and k not in expected}
    weights, prefix = _strip_prefixes({k: v for k, v in state.items() if k not in stats}, expected)
    outside = {}
    for key, value in stats.items():
        short = key[len(prefix):] if key.startswith(prefix) else key
        if short in expected:
            weights[short] = value
        else:
            outside[key] = value
    return weights, outside


def _strip_prefixes(state: dict, expected: set[str]) -> tuple[dict, str]:
    """Drop first key components shared by every key (``module.``, ``model.``, ...) if that fits ``expected``;
    the state and the prefix dropped."""
    best, candidate, best_prefix, prefix = state, state, "", ""
    for _ in range(4):
        if len({k.split(".", 1)[0] for k in candidate}) != 1 or not all("." in k for k in candidate):
            break
        prefix += next(iter(candidate)).split(".", 1)[0] + "."
        candidate = {k.split(".", 1)[1]: v for k, v in candidate.items()}
        if len(candidate.keys() & expected) > len(best.keys() & expected):
            best, best_prefix = candidate, prefix
    return best, best_prefix


def _check_stats(stats: dict, module: nn.Module, target: nn.Module, path: str, what: str) -> dict:
    """Check the file's normalisation stats against the module's normaliser; return the keys that are none."""
    groups: dict[str, dict[str, str]] = {}
    for key in stats:
        holder, _, name = key.rpartition(".")
        groups.setdefault(holder, {})[STAT_NAMES[name]] = key
    pairs = {h: g for h, g in groups.items() if set(g) == {"mean", "std"} and len(g) == len(
        [k for k in stats if k.rpartition(".")[0] == h])}
    rest = {k: v for k, v in stats.items() if k.rpartition(".")[0] not in pairs}
    if not pairs:
        return rest
    ours = _own_stats(module, target)
    for group in pairs.values():
        if ours is None:
            given = ",".join(f"{which}={_values(stats[group[which]], 6)}" for which in ("mean", "std"))
            raise UsageError(f"checkpoint {path} normalises inputs ({', '.join(group.values())}) but {what} has no "
                             f"normaliser; give it with --normalize {given}")
        for which in ("mean", "std"):
            value, own = stats[group[which]], ours[which]
            v, o = value.float().flatten(), own.detach().float().flatten().to(value.device)
            if not (v.numel() == o.numel() or 1 in (v.numel(), o.numel())) or not torch.allclose(v, o, atol=1e-4):
                raise UsageError(f"checkpoint {path} normalises inputs with {which}={_values(value)} but {what} uses "
                                 f"{which}={_values(own)}; set the model's {which} to the checkpoint's")
    return rest


def _own_stats(module: nn.Module, target: nn.Module) -> dict[str, torch.Tensor] | None:
    """The normaliser's mean/std: a :class:`Normalized` module's, else ``mean``/``std`` (``mu``/``sigma``) tensors
    the network keeps at its top level (as non-persistent buffers or plain attributes); None if there are none."""
    if isinstance(module, Normalized):
        return {"mean": module.mean, "std": module.std}
    found = {}
    for name, which in STAT_NAMES.items():
        value = getattr(target, name, None)
        if isinstance(value, torch.Tensor):
            found.setdefault(which, value)
    return found if set(found) == {"mean", "std"} else None


def _values(t: torch.Tensor, digits: int = 4) -> str:
    return ",".join(f"{v:.{digits}g}" for v in t.flatten().tolist())


def _names(keys: list) -> str:
    more = f" (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return ", ".join(map(str, keys[:SHOW])) + more


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _why(e: Exception) -> str:
    """``torch.load`` raised ``KeyError: 101`` and the like, on one line."""
    lines = str(e).strip().splitlines()
    return f"torch.load raised {type(e).__name__}" + (f": {lines[0][:120]}" if lines else "")
