"""Finding the dataset files under ``--data-dir``, and fetching them from public mirrors when asked.

Loaders find files with :func:`data_root` and :func:`find_file`, and download only with ``--set download=true``.

:func:`download` streams one URL to a file: a temporary file beside the destination, renamed into place with
``os.replace`` only once complete and (where a checksum is given) verified, so an interrupted download never
leaves a half-written file under the real name.  Any network failure is a one-line :class:`DataError` that
says the machine may be offline and where to put the file by hand.

``MIRRORS`` maps each dataset to the base URL of its files.  The environment variable ``HARNESS_MIRROR``
replaces them all: with ``HARNESS_MIRROR=http://host/data`` the file ``F`` of dataset ``D`` is fetched from
``http://host/data/D/F`` (the same layout as a ``--data-dir``; ``file://`` URLs work too).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from harness.core import progress
from harness.core.errors import DataError

MIRROR_ENV = "HARNESS_MIRROR"

MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",  # cifar-10-python.tar.gz
    "cifar100": "https://www.cs.toronto.edu/~kriz/",  # cifar-100-python.tar.gz
    "svhn": "http://ufldl.stanford.edu/housenumbers/",
}


def data_root(dataset: str, data_dir: str | os.PathLike | None, download: bool, what: str) -> Path:
    """``data_dir`` as a Path; a one-line :class:`DataError` when none is given or it does not exist.

    ``what`` names the files the user has to supply (for the message), e.g. ``"the official idx .gz files"``.
    """
    if data_dir is None or str(data_dir) == "":
        raise DataError(
            f"{dataset}: no data directory given; pass --data-dir DIR with {what} in DIR or DIR/{dataset} "
            f"(or --data-dir DIR --set download=true to fetch them there)"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir() and not download:
        raise DataError(
            f"{dataset}: data directory {root} does not exist; create it and put {what} there "
            f"(or pass --set download=true)"
        )
    return root


def find_file(names: Sequence[str], dirs: Sequence[Path]) -> Path | None:
    """The first existing ``dir / name``, trying each folder in turn (with each name), or ``None``."""
    for folder in dirs:
        for name in names:
            path = folder / name
            if path.is_file():
                return path
    return None


def describe_dirs(dirs: Sequence[Path]) -> str:
    """``"a, b or c"`` for a message."""
    names = [str(d) for d in dirs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def url_for(dataset: str, filename: str) -> str:
    """The URL of ``filename`` of ``dataset``: under ``$HARNESS_MIRROR/<dataset>/`` if set, else its public mirror."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{dataset}/{filename}"
    if dataset not in MIRRORS:
        raise DataError(f"{dataset}: no download mirror known; put its files under --data-dir by hand")
    return MIRRORS[dataset] + filename


def download(url: str, dest_path: str | os.PathLike, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest_path`` atomically; verify ``md5`` if given.  Returns the destination path.

    A tqdm progress bar shows on stderr when stderr is a terminal, except under ``--quiet`` (the switch of
    ``harness.core.progress``).
    """
    dest = Path(dest_path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise DataError(f"cannot write into {dest.parent} ({_one_line(err)}); pass a writable --data-dir") from None
    tmp = Path(tmp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "robustness-harness"})
            response = urllib.request.urlopen(request, timeout=timeout)
            with response, _progress(_length(response), dest.name) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} has MD5 {digest.hexdigest()}, not the published {md5}; "
                f"the mirror served a different file: fetch {dest.name} by hand into {dest.parent}"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            err.close()  # an HTTP error carries the open response
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
        raise DataError(
            f"could not download {url} ({_one_line(reason)}); offline or mirror down? put {dest.name} into {dest.parent} by hand"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(dataset: str, filename: str, dest_dir: str | os.PathLike, md5: str | None = None) -> Path:
    """Download ``filename`` of ``dataset`` (see :func:`url_for`) into ``dest_dir``."""
    return download(url_for(dataset, filename), Path(dest_dir) / filename, md5=md5)


def extract_tar(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> None:
    """Extract a (gzipped) tar archive into ``dest_dir``, refusing anything but plain files and folders inside it.

    Members with absolute paths, ``..`` components, links or device files are a :class:`DataError`: nothing is
    extracted from such an archive.  Extraction goes to a temporary folder first, then its entries are moved in.
    """
    archive, dest = Path(archive), Path(dest_dir)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: refusing to extract unsafe archive member {m.name!r}")
            dest.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=dest))
            try:
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **kwargs)
                for entry in staging.iterdir():
                    target = dest / entry.name
                    if target.exists():
                        shutil.rmtree(target) if target.is_dir() else target.unlink()
                    os.replace(entry, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive}: cannot extract ({_one_line(err)}); delete it and download it again") from None


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


def _progress(total: int | None, desc: str):
    if progress.is_quiet() or not sys.stderr.isatty():
        return _NoBar()
    return progress.bar(total, desc, unit="B", unit_scale=True, unit_divisor=1024)


def _length(response) -> int | None:
    try:
        return int(response.headers.get("Content-Length") or 0) or None
    except (TypeError, ValueError, AttributeError):
        return None


def _one_line(err: object) -> str:
    return " ".join(str(err).split()) or type(err).__name__
