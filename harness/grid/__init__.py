"""Grids of runs: ``harness grid GRID.toml [--out DIR] [--dry-run] [--backend local|ray] [--address ADDR] [--quiet]``.

A grid file names axes; every combination of the *cell axes* that no ``[[exclude]]`` removes is a cell, one
``harness run`` with all the grid's attacks and eps (so the worst case per sample is over the attacks, and a
defense is prepared once for all budgets)::

    [grid]
    out = "runs/grids/preempt_linf_digits"   # default runs/grids/<file stem>; --out overrides
    ci = false                               # intervals in the results.md / results.tex table
    [axes]                                   # lists; cell axes: dataset model defense norm seed "set.KEY"
    model = ["digits_cnn_adv", "digits_cnn_preempt"]
    defense = ["none", "preempt"]
    attack = ["fgsm", "pgd_linf"]            # run lists, shared by every cell: attack, eps
    eps = [0.05, 0.1, "8/255"]               # or by norm: eps = {linf = [0.1], l2 = [0.5]}
    seed = [0]
    "set.preempt.maxiter" = [10, 30]         # any --set as an axis
    [settings]                               # shared: n batch_size passes split data_dir device arch no_samples,
    n = 100                                  # set = ["k=v", ...], or any axis with one value (norm = "linf")
    [[exclude]]                              # cells matching every key (a value or a list of values)
    model = "digits_cnn_preempt"
    "set.preempt.maxiter" = 30

A ``set`` value scoped to a plugin reaches only the cells that run it (``preempt.maxiter`` is left out of the
``none`` cells, whose ``set`` column is then empty; cells that become the same run are listed once).  Unknown
keys, empty axes, bad values and unknown names are a usage error (one line, exit 2) before anything is written.

Output: ``<out>/cells/<id>/`` per cell (id: 12 hex digits of the SHA-256 of the cell's canonical spec), a
``harness run`` folder plus ``done.json`` once complete; a complete cell is never recomputed.  The combined
``results.csv`` / ``results.md`` / ``results.tex`` at ``<out>`` are rewritten atomically after every finished cell
and at the end.  ``--dry-run`` lists the cells, their state (done, running, partial, to do) and commands.

Crash safety: a cell folder without ``done.json`` is recomputed from scratch, so after ``kill -9`` the same command
recomputes at most the cells that were running and ends with the same ``results.csv``, byte for byte.  Each cell
is computed under a lock of its own (``filelock``; the kernel drops it when the process dies): a second grid
process on the same folder takes the cells nobody holds, then waits for the others (and computes any whose
holder died).  The Ray backend (``harness.grid.ray_backend``) keeps the same state.  See docs/GRIDS.md.
"""
from __future__ import annotations

from .runner import cmd_grid, dry_run, run_grid
from .spec import Cell, Grid, load_grid

__all__ = ["Cell", "Grid", "cmd_grid", "dry_run", "load_grid", "run_grid"]
