#!/usr/bin/env bash
# The README's main command: set up (if needed), then search a pruning policy for digits-cnn.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hilprune demo "$@"
