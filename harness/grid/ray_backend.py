"""``harness grid --backend ray``: each cell as a Ray task, on a local Ray instance or an existing cluster.

The task runs the very function the local backend runs (the cell's ``RunSpec``, built and run in-process, quiet) into a temporary
folder on whichever node it lands, and hands the files back; the driver writes them into the cell's folder and
then the completion marker, holding the cell's lock meanwhile.  So the cell folders on the driver stay the whole
state (resume, locks and tables as with the local backend), and the nodes need no shared file system.  The
rows are those of the local backend for the same seed (same code, same seeds; on CPU byte for byte).

Resources: one GPU per cell where the cluster has GPUs (the run inside picks ``cuda``), else one CPU per cell
(Ray then sets one thread per worker).  A worker that dies (node lost, ``kill -9``) has its task retried by Ray
up to ``RETRIES`` times; a task that still fails stops the grid like a failed local cell.

Every node needs the same environment (this package installed, e.g. ``./setup.sh --dev`` on each, and the data
for a dataset that is not embedded at the same ``data_dir``); ``ray.init`` is called with ``address`` (``auto``,
``HOST:6379``, ``ray://HOST:10001``) or, without it, connects to the cluster ``RAY_ADDRESS`` names or starts a
local instance.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.progress import is_quiet, quieted

from .spec import Cell, Grid
from .store import CellFailed, claims, clear

RETRIES = 2


def harness_grid_cell(cell: Cell, debug: bool = False) -> tuple[int, dict[str, bytes], str]:
    """The Ray task (its workers show as ``ray::harness_grid_cell``): (exit code, the run's files, its error).
    The worker's entry point, the one place it sets the output switch: quiet, always (the driver shows the grid's
    bar and a worker's stdout is discarded); restored after the task, should Ray run it in the driver's process."""
    from .execute import execute

    with quieted(True), tempfile.TemporaryDirectory(prefix="harness-grid-") as tmp:
        out = Path(tmp) / "cell"
        with contextlib.redirect_stdout(io.StringIO()):
            code, err = execute(cell, out, debug)
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} \
            if code == 0 else {}  # figures/ included, as bytes
    return code, files, err


def import_ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise UsageError("--backend ray needs the ray package: pip install -e '.[ray]' (./setup.sh --dev does)") from None
    return ray


def start(ray, address: str | None) -> bool:
    """Connect to (or start) Ray unless this process already has; True when this call did.  Ray's own log lines
    reach the driver except under ``--quiet`` (the switch of ``harness.core.progress``)."""
    if ray.is_initialized():
        return False
    silent = is_quiet()
    kw = {"log_to_driver": not silent, "logging_level": logging.ERROR if silent else logging.INFO}
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(include_dashboard=False, **kw)
    return True


def run_cells(grid: Grid, finish, *, debug: bool, address: str | None) -> None:
    """Submit every free incomplete cell at once; then, one by one, those another process held."""
    ray = import_ray()
    started = start(ray, address)
    gpu = ray.cluster_resources().get("GPU", 0) >= 1
    task = ray.remote(max_retries=RETRIES, **({"num_gpus": 1} if gpu else {"num_cpus": 1}))(harness_grid_cell)
    pending = {}

    def collect() -> None:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell, lock = pending.pop(ref)
            try:
                try:
                    code, files, err = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if debug:
                        raise
                    raise CellFailed(cell, 1, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None
                if code:
                    raise CellFailed(cell, code, err)
                clear(grid.out, cell)
                finish(cell, files)
            finally:
                lock.release()

    def note(text):  # the free cells are all submitted before any wait: collect them first
        collect()
        if not is_quiet():
            print(text, file=sys.stderr)

    try:
        for cell, lock in claims(grid, note):
            pending[task.remote(cell, debug)] = (cell, lock)
        collect()
    finally:
        for ref, (_, lock) in pending.items():
            ray.cancel(ref, force=True)
            lock.release()
        if started:
            ray.shutdown()
