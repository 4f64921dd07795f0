"""Which samples a run evaluates: all, a seeded class-stratified draw (the default for ``--n``), the first n, or
the user's own indices.  The chosen indices are part of what a run reports (``indices.txt``, their hash in
run.json and the data fingerprint), so a small-n number is never silently about one class of a class-ordered
folder."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from harness.core.errors import UsageError

from .base import ImageSet


def stratified(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices drawn per class in proportion to the class counts (largest remainders first, ties to the lower
    class), each class's share a seeded permutation's head; returned in ascending (dataset) order."""
    classes, counts = torch.unique(y, return_counts=True)
    quota = counts.double() * n / len(y)
    take = quota.floor().long()
    rest = n - int(take.sum())
    order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]).item(), i))
    for i in order[:rest]:
        take[i] += 1
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c, k in zip(classes.tolist(), take.tolist()):
        members = (y == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(chosen).sort().values


def read_indices(path: str, size: int) -> torch.Tensor:
    """Indices from a text file (one integer per line, or comma/space separated; ``#`` comments): each within the
    data and given once, else one UsageError line."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--indices {path}: no such file")
    words = [w for line in p.read_text().splitlines() for w in line.split("#")[0].replace(",", " ").split()]
    try:
        idx = [int(w) for w in words]
    except ValueError:
        raise UsageError(f"--indices {path}: not a list of integers (found {next(w for w in words if not w.lstrip('-').isdigit())!r})") from None
    if not idx:
        raise UsageError(f"--indices {path}: the file holds no index")
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise UsageError(f"--indices {path}: index {bad[0]} is out of range (the data has {size} samples: 0..{size - 1})")
    if len(set(idx)) < len(idx):
        dup = next(i for i in idx if idx.count(i) > 1)
        raise UsageError(f"--indices {path}: index {dup} is given twice")
    return torch.tensor(idx, dtype=torch.long)


def indices_hash(idx: torch.Tensor) -> str:
    return hashlib.sha256(",".join(map(str, idx.tolist())).encode()).hexdigest()[:16]


def select(data: ImageSet, n: int | None, rule: str = "stratified", seed: int = 0,
           indices: str | None = None) -> tuple[ImageSet, torch.Tensor | None, str]:
    """The evaluated samples, their indices into ``data`` (None: all, in order) and the rule as run.json states it."""
    if indices is not None:
        idx = read_indices(indices, len(data))
        if n is not None and n != len(idx):
            raise UsageError(f"--n {n} and --indices {indices} ({len(idx)} indices) disagree; give one of them")
        return subset(data, idx), idx, f"indices:{indices_hash(idx)}"
    if n is None or n == len(data):
        return data, None, "all"
    if n <= 0 or n > len(data):
        raise UsageError(f"--n {n} is out of range: {data.name} has {len(data)} samples")
    if rule == "first":
        return data.take(n), torch.arange(n), "first"
    idx = stratified(data.y, n, seed)
    return subset(data, idx), idx, "stratified"


def subset(data: ImageSet, idx: torch.Tensor) -> ImageSet:
    return data.subset(idx)


def fingerprint(data: ImageSet) -> str:
    """16 hex digits of sha256 over the evaluated images (float32 bytes) and labels: two runs on other data never
    share a config hash."""
    h = hashlib.sha256()
    h.update(str(tuple(data.x.shape)).encode())
    h.update(data.x.float().contiguous().numpy().tobytes())
    h.update(data.y.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
