"""Progress bars (tqdm) for the long loops inside plugins: Algorithm 1's outer steps, an attack's stages.

The engine's own bars get ``disable=quiet`` directly; a plugin loop has no ``quiet`` argument, so the CLI sets the
process-wide switch once (``set_quiet``) and every bar made here obeys it.  Bars close themselves (``leave=False``),
so a finished loop leaves no line behind.  This module imports nothing of the project.
"""
from __future__ import annotations

from tqdm import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    """The process-wide switch: progress bars and printed tables off."""
    return _QUIET


def bar(total: int | None = None, desc: str = "", **kw) -> tqdm:
    """A tqdm bar (ETA included) that is silent under ``--quiet``."""
    return tqdm(total=total, desc=desc, disable=_QUIET, leave=False, dynamic_ncols=True, **kw)
