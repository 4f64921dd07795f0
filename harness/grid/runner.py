"""``harness grid``: compute the cells that are not complete, one at a time here or as Ray tasks, and keep the
combined tables up to date after every cell.

Concurrency: a process computes a cell only while it holds the cell's lock.  It skips the cells another process
holds (it takes the others), and at the end waits for them; if the holder died without finishing one, this
process computes it.  So two grid processes on one folder split the cells between them and both end with the
complete tables.  A failed cell stops the grid (exit 2 for a usage error inside the run, else 1); the complete
cells are kept and the next run resumes.
"""
from __future__ import annotations

import sys

from harness.core.errors import UsageError
from harness.core.progress import bar, is_quiet

from .execute import execute
from .spec import Cell, Grid, load_grid
from .store import CellFailed, claims, clear, is_done, mark_done, read_rows, status, write_combined


def cmd_grid(args) -> int:
    """The subcommand."""
    if args.address and args.backend != "ray":
        raise UsageError("--address goes with --backend ray")
    if args.report_into is not None:
        from .pages import check_page

        if args.dry_run:
            raise UsageError("--report-into does not go with --dry-run")
        check_page(args.report_into)
    grid = load_grid(args.file, args.out)
    if args.dry_run:
        print(dry_run(grid))
        return 0
    from harness.writable import probe_writable

    probe_writable(grid.out)  # a trial write: os.access says yes under /proc or on a read-only mount
    before = sum(is_done(grid.out, c) for c in grid.cells)
    try:
        run_grid(grid, backend=args.backend, address=args.address, debug=args.debug)
    except CellFailed as fail:
        write_combined(grid, grid.out)
        what = " ".join(f"{k}={v}" for k, v in fail.cell.labels.items())
        print(f"harness: error: grid cell {fail.cell.id} ({what}) failed with exit code {fail.code}"
              f"{': ' + fail.message.splitlines()[-1] if fail.message else ''}; the complete cells are kept "
              f"(rerun to resume)", file=sys.stderr)
        return 2 if fail.code == 2 else 1
    if not is_quiet():
        from tabulate import tabulate

        from .tables import paper_table

        head, body, _ = paper_table(grid, _combined(grid)[0])
        n = len(grid.cells)
        print(tabulate(body, headers=head, tablefmt="github", disable_numparse=True))
        print(f"\nwrote {grid.out}/results.csv, results.md, results.tex ({n} cell{'s' * (n != 1)}: "
              f"{n - before} finished now, {before} complete before)")
    if args.report_into is not None:
        from .pages import data_path, report_into

        page = report_into(grid, args.report_into)
        if not is_quiet():
            print(f"wrote {data_path(grid.path)} and {page}")
    return 0


def _combined(grid: Grid):
    from .tables import combined_rows

    return combined_rows(grid, [(c, read_rows(grid.out, c)) for c in grid.cells])


def dry_run(grid: Grid) -> str:
    """The cells, their state and their commands; writes nothing."""
    states = [status(grid.out, c) for c in grid.cells]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("done", "running", "partial", "to do") if s in states)
    n = len(grid.cells)
    lines = [f"grid {grid.name} ({grid.path}): {n} cell{'s' * (n != 1)} ({counts}); out {grid.out}"]
    for cell, state in zip(grid.cells, states):
        lines.append(f"  {state:8s} {cell.id}  " + " ".join(f"{k}={v}" for k, v in cell.labels.items()))
        lines.append(f"  {'':8s} {cell.command}")
    return "\n".join(lines)


def run_grid(grid: Grid, *, backend: str = "local", address: str | None = None, debug: bool = False) -> None:
    """Compute every incomplete cell of ``grid`` into ``grid.out``; raises ``CellFailed`` on the first failure.
    Bars and notes on stderr except under ``--quiet`` (the switch of ``harness.core.progress``)."""
    out = grid.out
    progress = bar(total=len(grid.cells), initial=sum(is_done(out, c) for c in grid.cells),
                   desc=f"grid {grid.name}", unit="cell")

    def finish(cell: Cell, files: dict[str, str] | None = None) -> None:
        mark_done(out, cell, files)
        progress.update()
        write_combined(grid, out)

    try:
        if backend == "ray":
            from .ray_backend import run_cells

            run_cells(grid, finish, debug=debug, address=address)
        else:
            run_local(grid, finish, debug=debug)
    finally:
        progress.close()
    write_combined(grid, out)


def run_local(grid: Grid, finish, *, debug: bool) -> None:
    """The cells one after another in this process (each prepares its defense once for all budgets)."""
    def note(text):
        if not is_quiet():
            print(text, file=sys.stderr)

    for cell, lock in claims(grid, note):
        try:
            code, message = execute(cell, clear(grid.out, cell), debug)
            if code:
                raise CellFailed(cell, code, message)
            finish(cell)
        finally:
            lock.release()
