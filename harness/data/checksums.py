"""Published MD5 checksums of the official dataset files, and their verification.

``MD5[dataset][file name]`` holds the checksum published by the dataset's authors (or, for CIFAR and SVHN, the
list torchvision checks against).  Files not in the table (an uncompressed idx file, a user's own image folder)
are not checked.  A mismatch is a :class:`DataError` naming the file: it is corrupt, truncated, or another
dataset's file under the same name.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.core.errors import DataError

MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    "svhn": {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
        "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
    },
}

# (path, size, mtime_ns) -> md5 of files already hashed in this process, so repeated loads do not re-hash.
_hashed: dict[tuple[str, int, int], str] = {}


def published_md5(dataset: str, filename: str) -> str | None:
    """The published MD5 of ``filename`` of ``dataset``, or ``None`` where none is published."""
    return MD5.get(dataset, {}).get(filename)


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex MD5 of a file (cached per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashed:
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                digest.update(block)
        _hashed[key] = digest.hexdigest()
    return _hashed[key]


def verify(path: str | os.PathLike, dataset: str, filename: str | None = None) -> bool:
    """Check ``path`` against the published MD5 of ``filename`` (default: its own name) of ``dataset``.

    Returns ``True`` when checked, ``False`` when no checksum is published; raises :class:`DataError` on a mismatch.
    """
    path = Path(path)
    expected = published_md5(dataset, filename or path.name)
    if expected is None:
        return False
    got = md5sum(path)
    if got != expected:
        raise DataError(
            f"{dataset}: {path} has MD5 {got}, not the published {expected}; "
            f"the file is corrupt or not the official {filename or path.name}: replace it"
        )
    return True
