"""Trained artifacts (zoo models, purifiers, autoencoders): where they come from, how they are named, written, read.

A trained artifact is looked up in three places, in this order (``load_or_train``):

1. **shipped**: ``harness/weights/NAME.pt``, package data, verified against the sha256 that its definition records
   (a zoo entry, a defense).  These are the weights the result pages' numbers and the CI baseline rest on: training is
   not bit-reproducible across CPUs (their vectorised kernels round differently), inference of fixed weights is
   (nearly), so only shipped weights give the same numbers on every machine.
2. **cache**: ``$HARNESS_CACHE`` (default ``~/.cache/harness``), weights trained earlier on this machine.
3. **trained now**, on one thread with the artifact's own seed, then cached with an atomic write.  The training
   is checkpointed after every epoch beside the cache entry (``<name>-torch<version>.partial.pt``, ``resume``): a
   killed training resumes there on the next call, to the same weights, and the checkpoint is removed once the
   weights are cached.  A lock beside it (``<name>-torch<version>.lock``) lets one process train an artifact at a
   time: another that needs it (a second grid process, a Ray worker on the same cache) waits, then loads it (the
   lock file goes once the weights are cached).

The name carries a key: a hash of everything that defines the artifact (``cache_key``), so a changed recipe never
picks up stale weights.  The torch version is part of the key of cached (trained here) weights, not of shipped ones.
Everything is read with ``torch.load(..., weights_only=True)``: a weights file is data, never code.
This module imports nothing of the project.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock

from . import resume
from .atomic import atomic_save

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"

# Cached weights must not depend on who trained them first: CPU kernels sum in a thread-dependent order, so a
# model trained on 2 threads differs in its last bits from one trained on 1.  All training runs on one thread.
TRAIN_THREADS = 1


class ArtifactError(RuntimeError):
    """A shipped weights file is missing or does not match its recorded sha256 (a broken install)."""


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def cache_key(spec: dict) -> str:
    """12 hex digits of sha256 over the canonical JSON of ``spec`` (what defines an artifact)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def torch_version() -> str:
    return torch.__version__.split("+")[0]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A state dict, read with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def shipped_file(name: str, sha256: str | None) -> Path | None:
    """The shipped weights ``harness/weights/<name>.pt`` when ``sha256`` records one, after checking its digest."""
    if sha256 is None:
        return None
    path = SHIPPED_DIR / f"{name}.pt"
    if not path.is_file():
        raise ArtifactError(f"shipped weights {path} are missing (reinstall the package)")
    digest = sha256_file(path)
    if digest != sha256:
        raise ArtifactError(f"shipped weights {path} have sha256 {digest[:12]}..., their entry records "
                            f"{sha256[:12]}... (a damaged or edited file)")
    return path


def load_or_train(name: str, train: Callable[[], dict], *, sha256: str | None = None) -> tuple[dict, str]:
    """The state dict of the artifact ``name`` (its key included) and where it came from: shipped (checked against
    ``sha256``), else cached (keyed by the torch version too), else ``train()``-ed now and cached atomically.

    A damaged cache file is trained again and replaced; a damaged shipped file is an ``ArtifactError``.  The
    training runs in a ``resume.session`` checkpointed to ``partial_file(name)``: it resumes what an interrupted
    call left there (a damaged or foreign checkpoint is a ``UsageError``), and the file goes once the weights are
    cached.
    """
    path = shipped_file(name, sha256)
    if path is not None:
        return safe_load(path), f"shipped:{path.name}"
    path, partial = cache_dir() / f"{name}-torch{torch_version()}.pt", partial_file(name)
    state = _cached(path, partial)
    if state is not None:
        return state, str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    with FileLock(lock):  # one trainer per artifact: other processes wait, then load its weights
        state = _cached(path, partial)
        if state is None:
            with torch_threads(TRAIN_THREADS), resume.session(partial, key=path.stem) as run:
                state = train()
            atomic_save(state, path)
            run.discard()
        lock.unlink(missing_ok=True)  # safe once the weights are there: whoever takes a lock checks them first
    return state, str(path)


def _cached(path: Path, partial: Path) -> dict | None:
    """The cached weights at ``path``, None when absent or damaged (then trained again and replaced)."""
    if not path.exists():
        return None
    try:
        state = safe_load(path)
    except Exception:  # noqa: BLE001 - a damaged cache file is retrained and replaced
        return None
    partial.unlink(missing_ok=True)  # left by a crash between caching the weights and removing it
    return state


def partial_file(name: str) -> Path:
    """Where the training of the artifact ``name`` is checkpointed while it runs (``resume``)."""
    return cache_dir() / f"{name}-torch{torch_version()}.partial.pt"
