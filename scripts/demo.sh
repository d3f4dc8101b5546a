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
exec .venv/bin/stream-triggers demo "$@"
