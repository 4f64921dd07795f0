"""Your own data: arrays, tensors, files and torch datasets as an :class:`ImageSet`, checked on load.

* ``from_arrays(x, y)``: torch tensors or numpy arrays.  ``x`` is N x C x H x W; N x H x W x C is accepted when
  its last dimension is 1 or 3 and its second is not, and N x H x W is grayscale.  Values must lie in [0, 1];
  integer images (uint8 0..255) are divided by ``scale`` (``--scale 255`` on the command line).
* ``load_file(path)``: a ``.npz`` with arrays ``x`` and ``y`` (``np.savez(path, x=images, y=labels)``), or a
  ``.pt`` holding an ``(x, y)`` tuple / list or a dict with ``x`` and ``y`` (read with ``weights_only=True``).
  Either may also hold ``classes`` (names, one per label).
* ``from_dataset(obj)``: a map-style or iterable ``torch.utils.data.Dataset`` yielding ``(image, label)``, or a
  ``DataLoader`` yielding ``(images, labels)`` batches.

Checks, each a one-line ``DataError`` (exit 2): an unreadable file, an ``.npz`` without ``x``/``y`` (naming the
arrays it has), the shape, NaN or infinite values, values outside [0, 1] (saying which ``scale`` to pass), labels
that are not non-negative integers, and a length mismatch.  Labels against the model: :func:`check_model_fits`.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError

from .base import ImageSet


def load_file(path: str | os.PathLike, *, scale: float | None = None, name: str | None = None) -> ImageSet:
    """Images and labels from a ``.npz`` (arrays ``x``, ``y``) or ``.pt`` (``(x, y)`` or ``{"x": .., "y": ..}``)."""
    p = Path(path).expanduser()
    name = name or p.stem
    if not p.is_file():
        raise DataError(f"data file {path} not found" + (" (it is a directory)" if p.is_dir() else ""))
    suffix = p.suffix.lower()
    if suffix == ".npz":
        x, y, classes = _read_npz(p)
    elif suffix in (".pt", ".pth"):
        x, y, classes = _read_pt(p)
    else:
        raise DataError(f"data file {path}: unknown format {suffix or '(no extension)'}; give a .npz with arrays x "
                        "and y, a .pt with an (x, y) tuple, or a folder of images")
    data = from_arrays(x, y, scale=scale, name=name, classes=classes)
    data.note = f"file {p}: {len(data):,} images" + (f" scaled by 1/{scale:g}" if scale else "")
    return data


def from_arrays(x, y, *, scale: float | None = None, name: str = "arrays",
                classes: Sequence[str] | None = None) -> ImageSet:
    """An :class:`ImageSet` from image and label arrays (torch or numpy); see the module docstring for the rules.

    ``classes`` names the classes (label ``i`` is ``classes[i]``); without it they are ``"0"``, ``"1"``, ... up to
    the largest label, and :func:`check_model_fits` widens them to the model's output.
    """
    xt = _images(_tensor(x, name, "x"), name, scale)
    yt = _labels(_tensor(y, name, "y"), name)
    if len(xt) != len(yt):
        raise DataError(f"{name}: {len(xt)} images but {len(yt)} labels")
    if len(yt) == 0:
        raise DataError(f"{name}: no images")
    top = int(yt.max())
    if classes is None:
        classes = tuple(str(i) for i in range(top + 1))
    else:
        classes = tuple(str(c) for c in classes)
        if top >= len(classes):
            raise DataError(f"{name}: label {top} is out of range for its {len(classes)} classes")
    note = f"{name}: {len(yt):,} images" + (f" scaled by 1/{scale:g}" if scale else "")
    return ImageSet(xt, yt, classes, name, note=note)


def from_dataset(obj, *, scale: float | None = None, limit: int | None = None) -> ImageSet:
    """An :class:`ImageSet` from a ``Dataset`` of ``(image, label)`` items or a ``DataLoader`` of batches.

    ``limit`` stops after that many samples (the first ones, in the dataset's order).  Items may be tensors,
    numpy arrays or PIL images (PIL images are uint8: pass ``scale=255``).
    """
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    name = type(obj.dataset if isinstance(obj, DataLoader) else obj).__name__
    if limit is not None and limit <= 0:
        raise DataError(f"{name}: limit must be positive, got {limit}")
    xs, ys, count = [], [], 0
    if isinstance(obj, DataLoader):
        for i, batch in enumerate(obj):
            bx, by = _pair(batch, name, f"batch {i}")
            bx, by = _tensor(bx, name, "x"), _tensor(by, name, "y").reshape(-1)
            xs.append(bx)
            ys.append(by)
            count += len(by)
            if limit is not None and count >= limit:
                break
        if not xs:
            raise DataError(f"{name}: the DataLoader yields no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    elif isinstance(obj, (Dataset, Sequence)):
        sized = isinstance(obj, Sized) and not isinstance(obj, IterableDataset)
        items = (obj[i] for i in range(len(obj) if limit is None else min(len(obj), limit))) if sized else iter(obj)
        for i, item in enumerate(items):
            ix, iy = _pair(item, name, f"item {i}")
            xs.append(_tensor(ix, name, "x"))
            ys.append(_tensor(iy, name, "y").reshape(-1))
            if limit is not None and len(xs) >= limit:
                break
        if not xs:
            raise DataError(f"{name}: the dataset is empty")
        shapes = {tuple(t.shape) for t in xs}
        if len(shapes) > 1:
            first = tuple(xs[0].shape)
            odd = next(i for i, t in enumerate(xs) if tuple(t.shape) != first)
            raise DataError(f"{name}: item {odd} has shape {tuple(xs[odd].shape)} but item 0 has {first}; "
                            "all images must have one size")
        x, y = torch.stack(xs), torch.cat(ys)
    else:
        raise DataError(f"cannot read images from a {type(obj).__name__}; pass (x, y) arrays, a Dataset or a "
                        "DataLoader")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return from_arrays(x, y, scale=scale, name=name)


def check_model_fits(data: ImageSet, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
    """One forward pass on two images: the logits must be N x K with K > the largest label (a one-line
    ``DataError`` naming both numbers otherwise).  Classes named ``"0"``, ``"1"``, ... (unknown names) are
    widened to the model's K.  The model's train/eval mode is left as it was (the check runs in eval mode)."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = data.x[:2].to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as e:  # noqa: BLE001 - a model's own error, on one line
        lines = str(e).strip().splitlines()
        raise DataError(f"{data.name}: the model fails on images of shape {tuple(x.shape)[1:]}: {type(e).__name__}"
                        + (f": {lines[0][:200]}" if lines else "")) from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor):
        raise DataError(f"the model returns a {type(logits).__name__}, not a tensor of logits (N x classes)")
    if logits.dim() != 2 or logits.shape[0] != len(x):
        raise DataError(f"the model returns shape {tuple(logits.shape)} for {len(x)} images; "
                        f"expected logits of shape ({len(x)}, classes)")
    width, top = logits.shape[1], int(data.y.max())
    if width <= top:
        raise DataError(f"{data.name}: labels go up to {top} but the model outputs {width} logits per image; "
                        f"it needs at least {top + 1}")
    if data.classes == tuple(str(i) for i in range(len(data.classes))) and width > len(data.classes):
        data.classes = tuple(str(i) for i in range(width))


def _read_npz(p: Path):
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = list(f.files)
            if "x" not in keys or "y" not in keys:
                has = ", ".join(keys) if keys else "no arrays"
                raise DataError(f"data file {p} has no {'x' if 'x' not in keys else 'y'} array (it has: {has}); "
                                "save it with np.savez(path, x=images, y=labels)")
            classes = [str(c) for c in f["classes"].tolist()] if "classes" in keys else None
            return f["x"], f["y"], classes
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read data file {p}: {type(e).__name__}: {_first_line(e)}") from None


def _read_pt(p: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ... on junk
        raise DataError(f"cannot read data file {p} as tensors (weights_only=True): {type(e).__name__}: "
                        f"{_first_line(e)}") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1], None
    if isinstance(obj, Mapping) and "x" in obj and "y" in obj:
        return obj["x"], obj["y"], obj.get("classes")
    held = f"a dict with keys {', '.join(map(str, obj))}" if isinstance(obj, Mapping) else (
        f"a {type(obj).__name__}" + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""))
    raise DataError(f"data file {p} holds {held}; save torch.save((x, y), path) or "
                    "torch.save({'x': x, 'y': y}, path)")


def _pair(item, name: str, where: str):
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item
    what = type(item).__name__ + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
    raise DataError(f"{name}: {where} is a {what}; expected an (image, label) pair")


def _tensor(a, name: str, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    if type(a).__module__.startswith("PIL."):
        a = np.asarray(a)
    try:
        arr = np.asarray(a)
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(f"dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: {what} is not a numeric array ({type(a).__name__}: {_first_line(e)})") from None


def _images(x: torch.Tensor, name: str, scale: float | None) -> torch.Tensor:
    if x.is_complex() or x.dtype == torch.bool:
        raise DataError(f"{name}: images have dtype {x.dtype}; expected floats in [0, 1] or integers with a scale")
    if x.dim() == 3:  # N x H x W grayscale
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # N x H x W x C
        x = x.permute(0, 3, 1, 2)
    elif x.dim() != 4:
        raise DataError(f"{name}: images must be N x C x H x W (or N x H x W x C, or N x H x W grayscale), "
                        f"got shape {tuple(x.shape)}")
    integer = not x.is_floating_point()
    x = x.float()
    if scale is not None:
        if not scale > 0:
            raise DataError(f"{name}: scale must be positive, got {scale}")
        x = x / float(scale)
    if not torch.isfinite(x).all():
        raise DataError(f"{name}: images contain NaN or infinite values")
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        found = f"images must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]" + (" after scaling" if scale else "")
        if lo < 0.0:
            hint = ("they look normalised: pass images in [0, 1] and give the normalisation to the model "
                    "(--normalize mean=...,std=...)")
        else:
            guess = 255 if hi <= 255 else 65535 if hi <= 65535 else hi
            hint = (f"pass --scale {guess:g} on the command line (scale={guess:g} in Python) to divide them"
                    + (" (they are integers)" if integer else ""))
        raise DataError(f"{name}: {found}; {hint}")
    return x


def _labels(y: torch.Tensor, name: str) -> torch.Tensor:
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        hint = " (one-hot? pass y.argmax(1))" if y.dim() == 2 else ""
        raise DataError(f"{name}: labels must be a vector of class indices, got shape {tuple(y.shape)}{hint}")
    if y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{name}: labels have dtype {y.dtype}; expected integer class indices")
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != torch.round(y))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{name}: labels must be integers, label {i} is {float(y[i]):g}")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        i = int((y < 0).nonzero()[0])
        raise DataError(f"{name}: labels must be non-negative class indices, label {i} is {int(y[i])}")
    return y


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__
