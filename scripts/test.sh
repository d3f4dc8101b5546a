#!/usr/bin/env bash
# Set up a virtualenv (.venv) with the project and its test extras, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The tests mostly wait on brokers and worker processes: TEST_WORKERS pytest processes
# (2 by default, each with its own broker; 0 runs them in this one) halve the wall time.
WORKERS=${TEST_WORKERS:-2}
if ! [[ $WORKERS =~ ^[0-9]+$ ]]; then
  echo "TEST_WORKERS=$WORKERS: give a number of pytest processes (0 runs the tests in one)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The native core (Rust, native/): checked and built where a Rust toolchain exists;
# without one everything runs on the Python engine (and tests/native skips).
if command -v cargo >/dev/null 2>&1; then
  (cd native && cargo fmt --check && cargo clippy --quiet --all-targets --all-features -- -D warnings && cargo test --quiet)
  .venv/bin/python -m pip install --quiet ./native
else
  echo "cargo not found: not building the native core"
fi
.venv/bin/python -c 'from stream_triggers.engine.native import describe; print(describe())'
.venv/bin/ruff check stream_triggers tests bench
JOBS=(-n "$WORKERS" --dist worksteal)
.venv/bin/python -m pytest "${JOBS[@]}" "$@"
# Once more with every worker on the native engine (the run above is Python's): every
# stream and fault test (the native engine is what a worker runs where it is built).
if [ $# -eq 0 ] && .venv/bin/python -c 'import stream_triggers_native' 2>/dev/null; then
  .venv/bin/python -m pytest "${JOBS[@]}" tests/stream tests/faults --engine native --no-cov -p no:cacheprovider
fi
