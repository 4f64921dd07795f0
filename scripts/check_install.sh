#!/usr/bin/env bash
# Does `pip install .` give a working harness?  In a fresh virtual environment (no system site-packages), from
# outside the source tree, with an empty model cache:
#   1. pip install torch (the CPU build, so that no dependency pulls the CUDA wheels), then pip install . of a
#      copy of the tree's files (not editable: the wheel's files, its package data and its entry points are what
#      runs; the copy keeps the build's build/ folder out of the working tree);
#   2. harness run --defense none --attack pgd_linf: the default job (shipped weights, embedded digits) writes
#      its report;
#   3. a misspelt attack is exit 2 with one line; a ta.<Class> attack without torchattacks is exit 2 with one
#      line naming its install command; after that command the same run works.
#
#   scripts/check_install.sh              # keeps nothing: the venv and its outputs are in a temporary folder
#   PYTHON=python3.11 TORCH_SPEC="torch==2.13.0" scripts/check_install.sh
#
# Takes a few minutes (the dependencies are installed from the package index or the local wheel folders that pip
# is configured with).  Exit 0: every step passed; otherwise the step that failed is the last line.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
say() { echo "check_install: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
pipq() { "$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

say "fresh venv in $TMP/venv"
"$PY" -m venv "$TMP/venv"
say "pip install $TORCH_SPEC (the CPU build where the index has one)"
pipq "$TORCH_SPEC"
say "pip install . (not editable) from a copy of the working tree's files (git ls-files: no build/ left in it)"
mkdir "$TMP/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | (cd "$ROOT" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
  | (cd "$ROOT" && tar --null -T - -cf -) | tar -C "$TMP/src" -xf -
pipq "$TMP/src"
"$TMP/venv/bin/python" -c "import harness" || fail "pip install . left no importable harness"

export HARNESS_CACHE="$TMP/cache" OMP_NUM_THREADS=1
cd "$TMP"  # not the source tree: the installed package is what is imported
H="$TMP/venv/bin/python -m harness"
case "$("$TMP/venv/bin/python" -c 'import harness; print(harness.__file__)')" in
  "$TMP/venv/"*) ;;
  *) fail "harness is not imported from the installed package" ;;
esac

say "harness run --defense none --attack pgd_linf"
$H run --defense none --attack pgd_linf --quiet --out "$TMP/run" || fail "the default run"
[ -s "$TMP/run/results.csv" ] && [ -s "$TMP/run/run.json" ] || fail "the default run wrote no report"
grep -q "^digits,digits_cnn_adv,none,pgd_linf," "$TMP/run/results.csv" || fail "results.csv has no pgd_linf row"

say "a misspelt attack: exit 2, one line"
set +e
$H run --attack pgd_lnf --quiet 2>"$TMP/err"; rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l <"$TMP/err")" = 1 ] && grep -q "did you mean pgd_linf" "$TMP/err" \
  || fail "misspelt name: exit $rc, $(cat "$TMP/err")"

say "ta.PGD without torchattacks: exit 2, one line with the install command"
set +e
$H run --attack ta.PGD --n 20 --quiet --out "$TMP/ta" 2>"$TMP/err"; rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l <"$TMP/err")" = 1 ] && grep -q "pip install --no-deps torchattacks" "$TMP/err" \
  || fail "ta.PGD without torchattacks: exit $rc, $(cat "$TMP/err")"
say "pip install --no-deps torchattacks==3.5.1, then ta.PGD runs"
pipq --no-deps "torchattacks==3.5.1"
$H run --attack ta.PGD --n 20 --quiet --out "$TMP/ta" || fail "ta.PGD with torchattacks"
say "passed: pip install . gives a working harness"
