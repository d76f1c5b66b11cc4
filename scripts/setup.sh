#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the CPU torch wheel first
# (a bare 'torch' requirement would pull a multi-GB CUDA build), then hilprune itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements/torch-cpu.txt
fi
stamp=.venv/.hilprune-installed
if [ -L .venv ]; then
  # A venv borrowed from another checkout (e.g. a worktree that runs benches on a fixed commit):
  # installing here would point that checkout's editable install at this one.
  echo "setup: .venv links to $(readlink .venv); hilprune is not reinstalled into it (run with PYTHONPATH=$PWD)" >&2
elif [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e ".[dev,postgres,openvino]"
  touch "$stamp"
fi
