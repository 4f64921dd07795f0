"""Resumable training: a checkpoint of a training after every epoch, and its resumption after a crash.

A training runs inside a ``session`` (``artifacts.load_or_train`` opens one beside the cache entry, as
``<name>-torch<version>.partial.pt``; ``harness train`` beside its output).  Each training loop inside it is a
*phase*, numbered in the order the loops start (a teacher, then its student; A5's R, then R and C together).  A loop
runs its epochs through ``Epochs(total, keep)``: after every epoch (or every ``every`` epochs) the phase's state is
written atomically to the session's file, with the final state of the phases before it:

* every object in ``keep``: modules, optimizers, schedulers (``state_dict``), ``torch.Generator`` states (the
  shuffling), tensors (values), ``Stateful`` objects (an eps ramp's position, Free's carried perturbation, early
  stopping's best epoch);
* the global torch RNG (and CUDA's, once initialised), which dropout, random starts and noise draw from;
* the epoch reached and the loop's log since the phase began.

A session that finds its file resumes: a finished phase is restored and skipped, the running one restarts after its
last saved epoch.  Every bit the training depends on is restored, so on the same machine a training killed at any
epoch and resumed ends with the same weights as one never interrupted; the checkpoint only reads state, so an
uninterrupted run trains exactly as it would without it.  A file that cannot be read, that belongs to another
training (its key), or whose phases do not fit the loops that run is refused with a ``UsageError`` naming it: never
silently trained over.  Without a session (a library call) ``Epochs`` only counts.  Imports nothing of the project
outside ``harness.core``.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch

from .atomic import atomic_save
from .errors import UsageError

FORMAT = "harness-training-checkpoint/1"


class Stateful:
    """State a checkpoint keeps that is not a torch object: ``state_dict()`` (tensors, numbers, strings, lists,
    dicts, None) and ``load_state_dict(state)``.  Subclasses declare it by inheriting."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Counter(Stateful):
    """A position that a checkpoint keeps: ``next()`` returns 1, 2, ... (an eps ramp's batch count)."""

    def __init__(self):
        self.n = 0

    def __next__(self) -> int:
        self.n += 1
        return self.n

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])


_TORCH_STATEFUL = (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Stateful)


def dump(obj) -> object:
    """The checkpointed state of one ``keep`` object."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, _TORCH_STATEFUL):
        return obj.state_dict()
    raise TypeError(f"a training checkpoint cannot keep a {type(obj).__name__}")


def restore(obj, state) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, torch.Tensor):
        with torch.no_grad():
            obj.copy_(state)
    else:
        obj.load_state_dict(state)


def rng_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": list(cuda)}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


class Session:
    """The checkpoint file ``path`` of the training ``key``; the phases saved there, and those of this process."""

    def __init__(self, path: str | Path, key: str, resume: bool = True):
        self.path, self.key = Path(path), key
        self.saved: list[dict] = self._read() if resume else []
        self.records: list[dict] = []

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        hint = "delete it to train from scratch"
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is refused the same way
            raise UsageError(f"training checkpoint {self.path} is unreadable ({_first_line(e)}); {hint}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("phases"), list):
            raise UsageError(f"{self.path} is not a training checkpoint of this harness; {hint}")
        if data.get("key") != self.key:
            raise UsageError(f"training checkpoint {self.path} belongs to another training ({data.get('key')!r}, "
                             f"this one is {self.key!r}); {hint}")
        return data["phases"]

    def refuse(self, why: str) -> UsageError:
        return UsageError(f"training checkpoint {self.path} does not fit this training ({why}); delete it to train "
                          "from scratch")

    def begin(self) -> tuple[int, dict | None]:
        """The next phase's index and its saved record (None: not saved)."""
        index = len(self.records)
        self.records.append({})
        return index, (self.saved[index] if index < len(self.saved) else None)

    def save(self, index: int, record: dict, final: bool = False) -> None:
        """Write the phases so far, ``record`` the state of phase ``index``; ``final``: the phase is over (its
        record is copied, so that later phases training the same objects do not change it)."""
        self.records[index] = copy.deepcopy(record) if final else record
        atomic_save({"format": FORMAT, "key": self.key, "phases": self.records[:index + 1]}, self.path)

    def discard(self) -> None:
        """Remove the checkpoint (the training is over and its result saved)."""
        self.path.unlink(missing_ok=True)


_SESSION: ContextVar[Session | None] = ContextVar("harness_training_session", default=None)


@contextmanager
def session(path: str | Path, key: str, resume: bool = True) -> Iterator[Session]:
    """Run the block's training loops checkpointed to ``path`` (key ``key``), resuming what it holds (``resume``
    False: start over, overwriting it).  Sessions nest: a model trained while training another has its own."""
    s = Session(path, key, resume)
    token = _SESSION.set(s)
    try:
        yield s
    finally:
        _SESSION.reset(token)


class Epochs:
    """The epochs of one training loop, checkpointed (module docstring): ``for epoch in Epochs(total, keep): ...``.

    Constructing it restores a saved phase (``start``: the first epoch still to run; ``total`` when the phase was
    over).  After epoch e (0-based) the state is saved when (e + 1) is a multiple of ``every`` or the last.
    ``log``: the loop's list of per-epoch records, kept from the phase's start and restored with it."""

    def __init__(self, total: int, keep: Mapping[str, object], *, log: list | None = None, every: int = 1):
        self.total, self.keep, self.log, self.every = int(total), dict(keep), log, max(1, int(every))
        self.session = _SESSION.get()
        self.start, self._base = 0, len(log) if log is not None else 0
        if self.session is None:
            return
        self.index, saved = self.session.begin()
        if saved is not None:
            self._restore(saved)

    def _restore(self, saved: dict) -> None:
        s, i = self.session, self.index
        try:
            total, names, epoch = saved["total"], saved["names"], saved["epoch"]
        except (KeyError, TypeError):
            raise s.refuse(f"phase {i} has no epoch record") from None
        if total != self.total or names != sorted(self.keep) or not 0 <= epoch <= total:
            raise s.refuse(f"phase {i}: saved {epoch}/{total} epochs of {', '.join(names)}; this loop runs "
                           f"{self.total} epochs of {', '.join(sorted(self.keep))}")
        try:
            for name, obj in self.keep.items():
                restore(obj, saved["state"][name])
            set_rng_state(saved["rng"])
        except Exception as e:  # noqa: BLE001 - a state that does not load is a foreign checkpoint
            raise s.refuse(f"phase {i}: {_first_line(e)}") from None
        if self.log is not None:
            self.log.extend(saved["log"])
        self.start = epoch

    def record(self, epoch: int) -> dict:
        return {"epoch": epoch, "total": self.total, "names": sorted(self.keep),
                "state": {k: dump(v) for k, v in self.keep.items()}, "rng": rng_state(),
                "log": list(self.log[self._base:]) if self.log is not None else []}

    def __iter__(self) -> Iterator[int]:
        for epoch in range(self.start, self.total):
            yield epoch
            done = epoch + 1
            if self.session is not None and (done % self.every == 0 or done == self.total):
                self.session.save(self.index, self.record(done), final=done == self.total)
        if self.session is not None and self.start == self.total:  # restored finished: kept for the next phases
            self.session.records[self.index] = copy.deepcopy(self.record(self.total))
