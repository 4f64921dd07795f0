"""Write the shipped weights of zoo entries: ``python scripts/ship_weights.py NAME [NAME ...]``.

Each entry is loaded as ``harness.models.zoo.load_zoo`` does (trained now on one thread where this machine has no
cached copy), its state dict is written to ``harness/weights/<name>-<key>.pt``, and the line to record in
``SHIPPED`` (``harness/models/zoo.py``) is printed.  The numbers of docs/results and ``reports/baselines/`` are then
regenerated from these files, which every machine loads unchanged.
"""
from __future__ import annotations

import argparse

import torch

from harness.core.artifacts import SHIPPED_DIR, atomic_save, sha256_file
from harness.core.registry import ZOO
from harness.models.zoo import artifact_name, load_zoo
from harness.plugins import load_builtins


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    load_builtins()
    for name in args.names:
        spec = ZOO.create(name)
        model = load_zoo(name, "cpu", data_dir=args.data_dir)
        path = SHIPPED_DIR / f"{artifact_name(name, spec)}.pt"
        atomic_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
        print(f'    "{name}": "{sha256_file(path)}",  # {path.name}, torch {torch.__version__}')


if __name__ == "__main__":
    main()
