"""Generic image folders: ``ROOT/<class>/<image>.png|.jpg|.jpeg`` (the layout of torchvision's ImageFolder).

Classes are the sub-folders of ``ROOT`` sorted alphabetically (label 0 is the first); images are found
recursively inside each class folder and ordered by path, so the order is fixed.  All images must share one
size.  Grayscale images (PIL modes ``1``, ``L``, ``LA``) give one channel; if any image is in colour, every image
is converted to RGB (alpha is dropped).  Pixels 0..255 are scaled to [0, 1].

With ``--set split=NAME`` the folder ``ROOT/NAME`` is used where it exists (``ROOT/test/<class>/...``);
otherwise ``ROOT`` itself holds the class folders.

ImageNet-style folders, whose images differ in size, take ``resize`` (``--resize N``: the shorter side scaled to N
with PIL's bilinear filter, the aspect ratio kept) and ``crop`` (``--crop N``: the central N x N, after any
resize), the usual evaluation preprocessing (resize 256, crop 224) without torchvision.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")


def list_images(root: Path, classes: Sequence[str] | None = None, name: str = "imagefolder"
                ) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files under ``root/<class>/`` in path order, their labels, and the class names.

    ``classes`` fixes the class order and requires exactly those folders; by default it is the folder names
    sorted alphabetically.
    """
    if not root.is_dir():
        raise DataError(f"{name}: folder {root} does not exist; put the images in {root}/<class>/<image>.png")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = folders
    else:
        missing = [c for c in classes if c not in folders]
        extra = [f for f in folders if f not in classes]
        if missing or extra:
            what = f"missing class folder {root / missing[0]}" if missing else f"unexpected folder {root / extra[0]}"
            raise DataError(f"{name}: {what}; expected exactly the class folders {', '.join(classes)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        found = sorted(p for p in (root / cls).rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{name}: no .png/.jpg/.jpeg images in {root}/<class>/; expected {root}/<class>/<image>.png")
    return files, labels, tuple(classes)


def read_image_folder(root: str | os.PathLike, classes: Sequence[str] | None = None, name: str = "imagefolder",
                      workers: int | None = None, resize: int | None = None, crop: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode an image folder into ``(uint8 images N x C x H x W, int64 labels, class names)``."""
    files, labels, classes = list_images(Path(root), classes, name)
    x = decode_files(files, name, workers, resize=resize, crop=crop)
    return x, np.asarray(labels, dtype=np.int64), classes


def decode_files(files: Sequence[Path], name: str = "imagefolder", workers: int | None = None,
                 rgb: bool = False, resize: int | None = None, crop: int | None = None) -> np.ndarray:
    """Decode ``files`` (in that order) into uint8 images N x C x H x W, all of one size.

    One channel if every image is grayscale, else RGB (grayscale images repeated into three channels);
    ``rgb=True`` gives RGB whatever the images are, with the same values.  ``resize``: the shorter side scaled
    to that many pixels (bilinear, aspect ratio kept); ``crop``: the central square of that size, after resizing.
    """
    for what, size in (("--resize", resize), ("--crop", crop)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise DataError(f"{name}: {what} must be a positive number of pixels, got {size!r}")
    workers = workers or min(8, os.cpu_count() or 1, len(files))
    with ThreadPoolExecutor(max(workers, 1)) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(lambda p: _decode(p, name, resize, crop), files, chunksize=64))
    if not arrays:
        raise DataError(f"{name}: no images to decode")
    first = arrays[0]
    for path, arr in zip(files, arrays):
        if arr.shape[:2] != first.shape[:2]:
            raise DataError(
                f"{name}: all images must have one size, but {path} is {arr.shape[1]}x{arr.shape[0]} while "
                f"{files[0]} is {first.shape[1]}x{first.shape[0]}; resize them first"
                + ("" if crop else " (or pass --resize N --crop N)")
            )
    if rgb or any(a.ndim == 3 for a in arrays):  # colour somewhere: everything becomes RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        x = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        x = np.stack(arrays)[:, None]
    return np.ascontiguousarray(x)


def _decode(path: Path, name: str, resize: int | None = None, crop: int | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in GRAY_MODES else "RGB")
            if resize:
                img = resize_shorter(img, resize)
            if crop:
                img = center_crop(img, crop, path, name)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{name}: cannot decode {path} ({' '.join(str(err).split())}); remove or replace it") from None


def resize_shorter(img, size: int):
    """``img`` with its shorter side scaled to ``size`` and the longer one in proportion (rounded down), bilinear."""
    from PIL import Image

    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img.resize(new, Image.BILINEAR)


def center_crop(img, size: int, path: Path, name: str):
    """The central ``size`` x ``size`` pixels (offsets rounded as ``round((side - size) / 2)``)."""
    w, h = img.size
    if w < size or h < size:
        raise DataError(f"{name}: {path} is {w}x{h}, smaller than --crop {size}; add --resize {size} (or more)")
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_image_set(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], name: str, note: str,
                 default_eps: dict[str, float] | None = None, default_model: str | None = None) -> ImageSet:
    """Wrap uint8 N x C x H x W images as an :class:`ImageSet` in [0, 1]."""
    xt = torch.from_numpy(x).float().div_(255.0)
    eps = default_eps if default_eps is not None else {"linf": 8 / 255, "l2": 0.5}
    return ImageSet(xt, torch.from_numpy(y), classes, name, default_eps=dict(eps), default_model=default_model, note=note)


@DATASETS.register("imagefolder", "images in --data-dir/<class>/*.png|jpg (or --data-dir/<split>/<class>/...); "
                                  "classes sorted alphabetically")
def imagefolder(split: str = "test", data_dir: str | None = None, download: bool = False,
                resize: int | None = None, crop: int | None = None) -> ImageSet:
    """A generic image folder under ``--data-dir``; see the module docstring for the layout, ``resize`` and ``crop``."""
    if data_dir is None or str(data_dir) == "":
        raise DataError("imagefolder: no data directory given; pass --data-dir DIR with images in "
                        "DIR/<class>/<image>.png (or DIR/<split>/<class>/...)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder: folder {root} does not exist; put the images in {root}/<class>/<image>.png "
                        f"(there is nothing to download for a generic image folder)")
    folder = root / split if split and (root / split).is_dir() else root
    if folder == root:
        split_dirs = [d.name for d in root.iterdir() if d.is_dir() and d.name.lower() in SPLIT_NAMES]
        if split_dirs:
            raise DataError(f"imagefolder: no split folder {root / split}; found split folders "
                            f"{', '.join(sorted(split_dirs))} (choose one with --set split=NAME)")
    x, y, classes = read_image_folder(folder, resize=resize, crop=crop)
    steps = [s for s in (resize and f"shorter side resized to {resize} (bilinear)",
                         crop and f"center-cropped to {crop}x{crop}") if s]
    note = (f"image folder {folder}: {len(y):,} images, {len(classes)} classes (folder names sorted "
            f"alphabetically), files in path order" + "".join(f", {s}" for s in steps))
    return to_image_set(x, y, classes, "imagefolder", note)
