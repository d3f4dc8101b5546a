#!/usr/bin/env bash
# Set up a virtualenv (.venv) with the project and its test extras, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check stream_triggers tests bench
.venv/bin/python -m pytest "$@"
