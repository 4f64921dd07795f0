#!/usr/bin/env bash
# The prepared device benchmark (see benchmarks/device.py): one Markdown table on stdout (and in --out FILE).
# With CUDA: the GPU sizes, under 8 minutes on an H200 (--quick: about half).  Without: the tiny CPU fallback.
#   benchmarks/device.sh [--quick] [--out FILE.md] [--device auto|cpu|cuda] [--data-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # the CPU fallback times one thread; CUDA runs do not need more
exec "$PY" benchmarks/device.py "$@"
