#!/usr/bin/env bash
# Set up a virtualenv (.venv) with the project, then run the end-to-end demo on the
# embedded broker: broker, topics, a worker and an executor, the questionnaire sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# The native core (Rust, native/) where a Rust toolchain exists; else the Python engine runs.
if command -v cargo >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet ./native
else
  echo "cargo not found: not building the native core"
fi
.venv/bin/python -c 'from stream_triggers.engine.native import describe; print(describe())'
exec .venv/bin/stream-triggers demo "$@"
