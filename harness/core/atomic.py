"""The one atomic write of the project's weights files (``artifacts``: cached and shipped weights; ``resume``:
training checkpoints).  Imports nothing of the project."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_save(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename: a crash never leaves half a file.  Saved
    through a file object, so the archive's inner folder is ``archive`` (not the temporary name): the same
    state dict gives the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
