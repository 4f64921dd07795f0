"""Load a state-dict checkpoint into a built architecture, with one-line errors when it does not fit.

Only ``torch.load(..., weights_only=True)`` is used: a checkpoint is data (tensors in dicts), never code, so
a file that pickles a whole model is refused.  Common wrappings are undone: training checkpoints that keep
the weights under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net``, and key prefixes that every
key shares, such as ``module.`` (DataParallel), ``model.`` (wrappers) or ``_orig_mod.`` (torch.compile), and
normalising wrappers such as RobustBench's ``normalize.mean``/``normalize.std`` + ``model.*``: the stored
mean/std must then equal the architecture's (they are applied by the model itself, see normalize.py).
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from harness.core.errors import UsageError

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
SHOW = 3  # how many offending keys an error message names


def load_checkpoint(model: nn.Module, path: str, arch: str) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (built as ``arch``) and return it in eval mode."""
    state = _unwrap(_read(path), path)
    expected = model.state_dict()
    state = _strip_prefixes(state, set(expected))
    state = _split_normalizer(state, set(expected), model, path, arch)
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
        raise UsageError(f"checkpoint {path} does not fit arch {arch}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)  # strict=False only for absent num_batches_tracked
    return model.eval()


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


def _strip_prefixes(state: dict, expected: set[str]) -> dict:
    """Drop first key components shared by every key (``module.``, ``model.``, ...) if that fits ``expected``."""
    best, candidate = state, state
    for _ in range(4):
        if len({k.split(".", 1)[0] for k in candidate}) != 1 or not all("." in k for k in candidate):
            break
        candidate = {k.split(".", 1)[1]: v for k, v in candidate.items()}
        if len(candidate.keys() & expected) > len(best.keys() & expected):
            best = candidate
    return best


def _split_normalizer(state: dict, expected: set[str], model: nn.Module, path: str, arch: str) -> dict:
    """``{"normalize.mean", "normalize.std", "model.<keys>"}`` -> the model's keys, once the stats are checked."""
    if state.keys() == expected:
        return state
    needed = {k for k in expected if not k.endswith("num_batches_tracked")}
    for head in {k.split(".", 1)[0] for k in state if "." in k}:
        inner = {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
        rest = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        stats = {k.rsplit(".", 1)[-1]: v for k, v in rest.items()}
        if not (needed <= inner.keys() <= expected) or len(stats) != len(rest) or not rest:
            continue
        if not stats.keys() <= {"mean", "std", "mu", "sigma"} or not hasattr(model, "mean"):
            continue
        for name, value in stats.items():
            ours = model.mean if name in ("mean", "mu") else model.std
            if value.numel() not in (1, ours.numel()) or not torch.allclose(
                    value.float().flatten(), ours.flatten().to(value.device), atol=1e-4):
                which = "mean" if name in ("mean", "mu") else "std"
                raise UsageError(
                    f"checkpoint {path} normalises inputs with {which}={_values(value)} but arch {arch} uses "
                    f"{which}={_values(ours)}; set the model's {which} to the checkpoint's")
        return inner
    return state


def _values(t: torch.Tensor) -> str:
    return ",".join(f"{v:.4g}" for v in t.flatten().tolist())


def _names(keys: list) -> str:
    more = f" (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return ", ".join(map(str, keys[:SHOW])) + more


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _why(e: Exception) -> str:
    """``torch.load`` raised ``KeyError: 101`` and the like, on one line."""
    lines = str(e).strip().splitlines()
    return f"torch.load raised {type(e).__name__}" + (f": {lines[0][:120]}" if lines else "")
