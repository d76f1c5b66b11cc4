#!/usr/bin/env bash
# The README's test command: set up (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two worker processes where there are two cores (pytest-xdist): on a 2-vCPU AMD EPYC (Zen 1) the
# suite took 16 minutes in one process, 11 in two. Tests that time things assert relations measured
# within one run (paired windows), never absolute times. Pass -n 0 to run in one process.
workers=1
[ "$(nproc)" -ge 2 ] && workers=2
exec .venv/bin/python -m pytest -n "$workers" "$@"
