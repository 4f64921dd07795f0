"""One grid cell, computed in this process: its ``RunSpec`` built, evaluated and saved (the local backend and the
Ray task both run this)."""
from __future__ import annotations

from pathlib import Path

from harness.core.errors import UsageError

from .spec import Cell


def execute(cell: Cell, out: Path, debug: bool = False) -> tuple[int, str]:
    """One cell: build its ``RunSpec``, evaluate it and save the run into ``out``; (exit code, error line) as
    ``harness run`` would end (2 bad input, 1 internal error)."""
    from harness.build import build

    try:
        build(cell.run_spec()).execute(["run", *cell.command.split()[2:]]).save(out)
        return 0, ""
    except UsageError as err:
        if debug:
            raise
        return 2, str(err).splitlines()[0] if str(err) else "usage error"
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a failed cell stops the grid with its reason; the others are kept
        if debug:
            raise
        return 1, f"internal error: {type(err).__name__}: {err}"
