"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches (or a PNG copy of the CIFAR-10 test set).

CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch`` and
``batches.meta``.  CIFAR-100: ``cifar-100-python/`` with ``train``, ``test`` and ``meta``.  Each batch is a pickled
dict: ``data`` is an N x 3072 uint8 array (1024 red, then green, then blue values of a 32x32 image, row-major),
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100) a list of N ints.  Pickles are read with an unpickler that
allows only numpy arrays, and the files are checked against the published MD5s (see ``checksums.py``).

Looked up in ``DIR/cifar-10-batches-py``, ``DIR/cifar10/cifar-10-batches-py`` and ``DIR/cifar10`` (likewise
``cifar-100-python`` / ``cifar100``); an unextracted ``cifar-10-python.tar.gz`` in ``DIR`` or ``DIR/cifar10`` is
extracted beside itself.  If the batches are absent, CIFAR-10's test split is read from a PNG copy,
``DIR/cifar10_test_images/<class>/*.png`` (ordered by class, then file name: not the order of ``test_batch``).
The PNG copy is listed at once but decoded lazily: ``take(n)`` decodes only the first ``n`` files, and the whole
set is decoded the first time ``x`` is read; either way the pixels are those of an eager load.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError
from harness.core.registry import DATASETS

from .base import ImageSet
from .checksums import published_md5, verify
from .download import data_root, describe_dirs, extract_tar, fetch, find_file
from .imagefolder import decode_files, list_images, to_image_set

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
EPS = {"linf": 8 / 255, "l2": 0.5}
PNG_FOLDER = "cifar10_test_images"

CIFAR10 = {"folder": "cifar-10-batches-py", "sub": "cifar10", "tar": "cifar-10-python.tar.gz",
           "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta",
           "label_key": "labels", "title": "CIFAR-10"}
CIFAR100 = {"folder": "cifar-100-python", "sub": "cifar100", "tar": "cifar-100-python.tar.gz",
            "train": ["train"], "test": ["test"], "meta": "meta", "label_key": "fine_labels", "title": "CIFAR-100"}

_NUMPY2 = int(np.__version__.split(".")[0]) >= 2
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, nothing else (no arbitrary code)."""

    def find_class(self, module: str, name: str):
        canonical = "numpy._core." + module[len("numpy.core."):] if module.startswith("numpy.core.") else module
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if canonical.startswith("numpy._core."):  # numpy 2 renamed numpy.core to numpy._core
            module = canonical if _NUMPY2 else "numpy.core." + canonical[len("numpy._core."):]
        return super().find_class(module, name)


def read_batch(path: str | Path) -> dict:
    """Load one CIFAR pickle batch (Python 2 or 3 pickle) as a dict with str keys."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"{path}: not a readable CIFAR pickle batch ({' '.join(str(err).split())})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR pickle batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images_labels(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: CIFAR batch without 'data' and '{label_key}' entries")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path}: data has shape {data.shape} and {len(labels)} labels; expected N x 3072 and N")
    return data.reshape(-1, 3, 32, 32), labels


def _batch_dir(name: str, spec: dict, root: Path, split: str, download: bool) -> Path | None:
    """The folder holding the batches, extracting or downloading the archive if needed; ``None`` if absent."""
    dirs = [root / spec["folder"], root / spec["sub"] / spec["folder"], root / spec["sub"]]
    found = find_file(spec[split], dirs)
    if found is not None:
        return found.parent
    archive = find_file([spec["tar"]], [root, root / spec["sub"]])
    if archive is None and download:
        archive = fetch(name, spec["tar"], root, md5=published_md5(name, spec["tar"]))
    if archive is None:
        return None
    verify(archive, name)
    extract_tar(archive, archive.parent)
    if not (archive.parent / spec["folder"] / spec[split][0]).is_file():
        raise DataError(f"{name}: {archive} holds no {spec['folder']}/{spec[split][0]}; replace it with the official archive")
    return archive.parent / spec["folder"]


def _missing(name: str, spec: dict, root: Path, split: str, png_hint: bool) -> DataError:
    dirs = [root / spec["folder"], root / spec["sub"] / spec["folder"], root / spec["sub"]]
    alt = f", or a PNG copy of the test set in {root / PNG_FOLDER}/<class>/*.png" if png_hint else ""
    return DataError(
        f"{name}: {spec[split][0]} not found in {describe_dirs(dirs)}; put the official python batches there "
        f"(or {spec['tar']} in {root}){alt}, or pass --set download=true"
    )


def _load_batches(name: str, spec: dict, folder: Path, split: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for fname in spec[split]:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"{name}: {path} is missing; put the complete official {spec['folder']} folder there")
        verify(path, name)
        x, y = _images_labels(path, spec["label_key"])
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise DataError(f"{name}: {path} has labels outside 0..{n_classes - 1}")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"{name}: unknown split {split!r}; choose one of test, train")


class LazyPngSet(ImageSet):
    """CIFAR-10's PNG copy: labels from the file list at once, pixels decoded only when used.

    ``take(n)`` decodes the first ``n`` files and returns a plain :class:`ImageSet`; reading ``x`` decodes all
    of them (once).  The values and order are those of decoding the whole folder.
    """

    def __init__(self, root: Path, files: list[Path], labels: list[int], note: str):
        self._root = root
        self._files = list(files)
        self._x: torch.Tensor | None = None
        self.y = torch.as_tensor(labels, dtype=torch.long)
        self.classes = CIFAR10_CLASSES
        self.name = "cifar10"
        self.default_eps = dict(EPS)
        self.default_model = None
        self.note = note

    @property
    def x(self) -> torch.Tensor:  # type: ignore[override]
        if self._x is None:
            self._x = self._decode(torch.arange(len(self._files))).x
        return self._x

    @x.setter
    def x(self, value: torch.Tensor) -> None:
        self._x = value

    def take(self, n: int | None) -> ImageSet:
        if self._x is not None or n is None or not 0 < n <= len(self):
            return super().take(n)  # all decoded already, all wanted, or out of range (the usual error)
        return self._decode(torch.arange(n))

    def subset(self, idx: torch.Tensor) -> ImageSet:
        return super().subset(idx) if self._x is not None else self._decode(idx)

    def _decode(self, idx) -> ImageSet:
        x = decode_files([self._files[i] for i in idx.tolist()], name="cifar10", rgb=True)
        if x.shape[1:] != (3, 32, 32):
            raise DataError(f"cifar10: images in {self._root} are {x.shape[1:]}, expected 3 x 32 x 32 RGB")
        return to_image_set(x, self.y[idx].numpy(), self.classes, self.name, self.note, self.default_eps)


@DATASETS.register("cifar10", "CIFAR-10 32x32 colour images from the official python batches (or a PNG copy "
                              "of the test set in DIR/cifar10_test_images)")
def cifar10(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    """CIFAR-10 from ``--data-dir``; see the module docstring for layouts and the PNG fallback."""
    _check_split("cifar10", split)
    root = data_root("cifar10", data_dir, download, "cifar-10-batches-py/ (the official python batches)")
    png = root / PNG_FOLDER
    use_png = split == "test" and png.is_dir()
    folder = _batch_dir("cifar10", CIFAR10, root, split, download and not use_png)
    if folder is None and use_png:
        files, labels, _ = list_images(png, classes=CIFAR10_CLASSES, name="cifar10")
        note = (f"CIFAR-10 test split from the PNG copy {png} ({len(labels):,} images, ordered by class then file "
                f"name, not test_batch order)")
        return LazyPngSet(png, files, labels, note)
    if folder is None:
        raise _missing("cifar10", CIFAR10, root, split, png_hint=split == "test")
    meta = folder / CIFAR10["meta"]
    if meta.is_file():
        verify(meta, "cifar10")
        names = read_batch(meta).get("label_names")
        if names is not None and tuple(names) != CIFAR10_CLASSES:
            raise DataError(f"cifar10: {meta} lists classes {tuple(names)}, not the CIFAR-10 classes")
    x, y = _load_batches("cifar10", CIFAR10, folder, split, 10)
    note = f"CIFAR-10 official {split} split ({len(y):,} images, batch order)"
    return to_image_set(x, y, CIFAR10_CLASSES, "cifar10", note, EPS)


@DATASETS.register("cifar100", "CIFAR-100 32x32 colour images (100 fine labels) from the official python batches")
def cifar100(split: str = "test", data_dir: str | None = None, download: bool = False) -> ImageSet:
    """CIFAR-100 (fine labels) from ``--data-dir``; see the module docstring for layouts."""
    _check_split("cifar100", split)
    root = data_root("cifar100", data_dir, download, "cifar-100-python/ (the official python batches)")
    folder = _batch_dir("cifar100", CIFAR100, root, split, download)
    if folder is None:
        raise _missing("cifar100", CIFAR100, root, split, png_hint=False)
    meta = folder / CIFAR100["meta"]
    if not meta.is_file():
        raise DataError(f"cifar100: {meta} is missing (it holds the class names); put the complete official "
                        f"cifar-100-python folder there")
    verify(meta, "cifar100")
    names = read_batch(meta).get("fine_label_names")
    if names is None or len(names) != 100:
        raise DataError(f"cifar100: {meta} has no list of 100 fine_label_names")
    x, y = _load_batches("cifar100", CIFAR100, folder, split, 100)
    note = f"CIFAR-100 official {split} split ({len(y):,} images, fine labels, file order)"
    return to_image_set(x, y, tuple(str(n) for n in names), "cifar100", note, EPS)
