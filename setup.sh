#!/usr/bin/env bash
# Set up .venv for the harness.  `./setup.sh` for running, `./setup.sh --dev` adds the test tools and Ray.
# - Where the interpreter already has torch (say a CUDA build), the venv sees it (--system-site-packages)
#   and keeps it.  Where it has none, torch==2.13.0 (the CPU build) is installed before anything else,
#   so that no dependency pulls several GB of CUDA wheels.
# - torchattacks goes in with --no-deps: it declares torchvision and an old requests it does not need.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev,ray]"  # ray: harness grid --backend ray, and its test
pipq() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
say() { echo "setup.sh: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    say "creating .venv (seeing the interpreter's own torch)"
    "$PY" -m venv --system-site-packages .venv
  else
    say "creating .venv"
    "$PY" -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  say "installing torch==2.13.0 (the CPU build; about 200 MB, a minute or more)"
  pipq "torch==2.13.0"
fi
say "installing the harness and its dependencies${extras:+ with the test tools} (numpy, scipy, scikit-learn, pyautoattack, foolbox, ...)"
pipq -e ".${extras}"
say "installing torchattacks (--no-deps)"
pipq --no-deps "torchattacks==3.5.1"
.venv/bin/python -c "import torch, harness, torchattacks, foolbox, pyautoattack" \
  || { say "the environment is incomplete (see the pip output above)"; exit 1; }
say "ready: .venv/bin/python -m harness --help"
