"""The one switch for output: progress bars (tqdm, on stderr) and the tables a command prints.

The switch is process-wide and set only at the top: by the command line's ``--quiet`` (``harness.cli``), by the
Python API's ``quiet=`` keyword (``harness.evaluate``), and once at the entry point of a grid worker process.  The
top sets it for the length of a call with ``quieted(flag)``, which restores it afterwards.  No function below the
top takes a ``quiet`` argument: a loop makes its bar with ``bar`` and a command asks ``is_quiet()`` before it prints
a table.  Bars close themselves (``leave=False``), so a finished loop leaves no line behind.  This module imports
nothing of the project.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Set the switch for the rest of the process (a script's entry point); a call that returns uses ``quieted``."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    """The process-wide switch: progress bars and printed tables off."""
    return _QUIET


@contextmanager
def quieted(quiet: bool = True) -> Iterator[None]:
    """The switch set to ``quiet`` inside the block, and back to what it was after it (an exception included)."""
    before = _QUIET
    set_quiet(quiet)
    try:
        yield
    finally:
        set_quiet(before)


def bar(total: int | None = None, desc: str = "", **kw) -> tqdm:
    """A tqdm bar on stderr (ETA included) that is silent under ``--quiet``."""
    return tqdm(total=total, desc=desc, disable=_QUIET, leave=False, dynamic_ncols=True, file=sys.stderr, **kw)
