"""``harness grid``: the local backend against Ray on this machine, for one 2 x 2 x 3 digits grid (12 cells).

    pytest benchmarks/test_bench_grid.py -s --benchmark-only
    BENCH_GRID_N=360 pytest benchmarks/test_bench_grid.py -s --benchmark-only     # all 360 test images per cell

Grid: model (digits_cnn_adv, digits_cnn) x defense (none, quantize) x seed (0, 1, 2); FGSM and PGD-20, Linf 0.1.
Wall time of the whole grid, each from an empty folder: local (in this process, one cell after another), then
Ray with one CPU (one cell at a time, like local: the difference is Ray's own cost -- starting the instance,
worker processes importing torch and the harness, shipping the files back) and with every CPU of the machine.
Ray's overhead per cell = (Ray 1 CPU - local) / cells.  The three combined results.csv must be the same bytes.
"""
from __future__ import annotations

import os
import time

import pytest

from harness.cli import main
from harness.core.artifacts import torch_threads

N = int(os.environ.get("BENCH_GRID_N", "100"))
GRID = f"""
[axes]
model = ["digits_cnn_adv", "digits_cnn"]
defense = ["none", "quantize"]
seed = [0, 1, 2]
attack = ["fgsm", "pgd_linf"]
[settings]
n = {N}
"""
CELLS = 12


def wall(argv) -> float:
    t0 = time.perf_counter()
    assert main(argv) == 0
    return time.perf_counter() - t0


def ray_wall(toml, out, cpus: int) -> tuple[float, float]:
    """(seconds to start the Ray instance, seconds of the grid on it)."""
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t1 = time.perf_counter()
    try:
        assert main(["grid", str(toml), "--out", str(out), "--quiet", "--backend", "ray"]) == 0
    finally:
        ray.shutdown()
    return t1 - t0, time.perf_counter() - t1


def test_grid_local_vs_ray(benchmark, tmp_path):
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    toml = tmp_path / "bench.toml"
    toml.write_text(GRID)
    with torch_threads(1):
        t0 = time.perf_counter()
        benchmark.pedantic(main, args=(["grid", str(toml), "--out", str(tmp_path / "local"), "--quiet"],),
                           rounds=1, iterations=1)
        local = time.perf_counter() - t0
    start1, ray1 = ray_wall(toml, tmp_path / "ray1", 1)
    cpus = os.cpu_count() or 1
    startn, rayn = ray_wall(toml, tmp_path / "rayn", cpus)
    same = {(tmp_path / d / "results.csv").read_bytes() for d in ("local", "ray1", "rayn")}
    overhead = (ray1 - local) / CELLS
    print(f"\n{CELLS} cells of {N} digits images: local {local:.1f} s; Ray 1 CPU {ray1:.1f} s + {start1:.1f} s to start "
          f"the instance (ratio {ray1 / local:.2f}, {(start1 + ray1) / local:.2f} with the start); Ray {cpus} CPUs "
          f"{rayn:.1f} s + {startn:.1f} s (ratio {rayn / local:.2f}, {(startn + rayn) / local:.2f}); "
          f"Ray's overhead {overhead:.2f} s per cell (start excluded)")
    benchmark.extra_info.update(local_s=local, ray1_s=ray1, ray1_start_s=start1, rayn_s=rayn, rayn_start_s=startn,
                                ray_cpus=cpus, overhead_per_cell_s=overhead)
    assert len(same) == 1  # the backends agree byte for byte
