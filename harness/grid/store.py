"""The grid's output folder is its state: one sub-folder per cell, a marker when a cell is complete, a lock per cell.

    <out>/results.csv, results.md, results.tex     the combined tables over the complete cells
    <out>/cells/<id>/                              one ``harness run --out`` folder, plus done.json when complete
    <out>/cells/<id>.lock                          held (flock) by the process computing that cell
    <out>/.results.lock                            held while the combined tables are rewritten

A cell is complete when ``done.json`` exists: it is written, atomically, only after the run returned 0 and its
files were in place, so a folder without it (a process killed mid-cell) is partial and is recomputed from scratch.
The locks are ``filelock`` locks (``flock`` on POSIX): the kernel drops them when their process dies, even by
``kill -9``, so a lock is never stale.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from harness.report import write_atomic

from .spec import Cell, Grid

DONE = "done.json"
BUSY = object()


class CellFailed(Exception):
    """A cell's run returned ``code`` != 0 (``message``: its last words, where known)."""

    def __init__(self, cell: Cell, code: int, message: str = ""):
        super().__init__(message)
        self.cell, self.code, self.message = cell, code, message


def cell_dir(out: Path, cell: Cell) -> Path:
    return Path(out) / "cells" / cell.id


def is_done(out: Path, cell: Cell) -> bool:
    d = cell_dir(out, cell)
    return (d / DONE).is_file() and (d / "results.csv").is_file()


def try_lock(out: Path, cell: Cell) -> FileLock | None:
    """The cell's lock, held; None when another process holds it."""
    path = Path(out) / "cells" / f"{cell.id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def wait_lock(out: Path, cell: Cell) -> FileLock:
    """The cell's lock, waiting as long as another process holds it."""
    lock = FileLock(Path(out) / "cells" / f"{cell.id}.lock", timeout=-1)
    lock.acquire()
    return lock


def is_running(out: Path, cell: Cell) -> bool:
    """Another process holds the cell's lock (a probe that creates nothing: no lock file, nobody holds it)."""
    path = Path(out) / "cells" / f"{cell.id}.lock"
    if not path.exists():
        return False
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def status(out: Path, cell: Cell) -> str:
    """``done``, ``running`` (locked by a process), ``partial`` (a folder from an interrupted run) or ``to do``."""
    if is_done(out, cell):
        return "done"
    if is_running(out, cell):
        return "running"
    return "partial" if cell_dir(out, cell).exists() else "to do"


def clear(out: Path, cell: Cell) -> Path:
    """An empty folder for the cell (a partial one is removed first); call with the cell's lock held."""
    d = cell_dir(out, cell)
    if d.exists():
        shutil.rmtree(d)
    return d


def mark_done(out: Path, cell: Cell, files: dict[str, str | bytes] | None = None) -> None:
    """Write the run's ``files`` (where the run wrote elsewhere) and then, last, the completion marker."""
    d = cell_dir(out, cell)
    if files:
        write_atomic(d, files)
    record = {"id": cell.id, "spec": cell.spec, "command": cell.command, "labels": cell.labels}
    write_atomic(d, {DONE: json.dumps(record, indent=2, sort_keys=True) + "\n"})


def read_rows(out: Path, cell: Cell) -> list[dict]:
    import csv

    with open(cell_dir(out, cell) / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def write_combined(grid: Grid, out: Path) -> int:
    """Rewrite results.csv / .md / .tex from the complete cells (under a lock: the last writer saw every marker
    written before it).  Returns the number of complete cells; writes nothing while there is none."""
    from .tables import combined_rows, to_csv_text, to_latex, to_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(out / ".results.lock"):
        done = [c for c in grid.cells if is_done(out, c)]
        if not done:
            return 0
        rows, columns = combined_rows(grid, [(c, read_rows(out, c)) for c in done])
        from harness.figures import grid_figures  # figures/robust_vs_eps over the cells, with several budgets

        figures = grid_figures(out, rows, {c.id: c.labels for c in grid.cells}, grid.varying, grid.name,
                               grid.names)
        write_atomic(out, {"results.csv": to_csv_text(rows, columns),
                           "results.md": to_markdown(grid, rows, len(done)) + figures,
                           "results.tex": to_latex(grid, rows)})
    return len(done)


def claim(out: Path, cell: Cell, wait: bool = False):
    """The cell's lock when this process is to compute it now; None when it is complete; ``BUSY`` when another
    process holds it (``wait``: wait for that process instead, then look again)."""
    if is_done(out, cell):
        return None
    lock = wait_lock(out, cell) if wait else try_lock(out, cell)
    if lock is None:
        return BUSY
    if is_done(out, cell):  # finished by another process meanwhile
        lock.release()
        return None
    return lock


def claims(grid: Grid, note):
    """(cell, lock) for every incomplete cell: first those no process holds, then, waiting, those others held."""
    busy = []
    for cell in grid.cells:
        lock = claim(grid.out, cell)
        if lock is BUSY:
            busy.append(cell)
        elif lock is not None:
            yield cell, lock
    for cell in busy:
        if is_done(grid.out, cell):
            continue
        note(f"harness grid: waiting for cell {cell.id}: another grid process is computing it")
        lock = claim(grid.out, cell, wait=True)
        if lock is not None:
            yield cell, lock
