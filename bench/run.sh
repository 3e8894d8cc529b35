#!/usr/bin/env bash
# All benchmarks, C++ next to the Python baseline: prints the table and writes bench/RESULTS.md.
#   bench/run.sh            full run (about 15 minutes on 2 cores)
#   bench/run.sh --quick    100 photos: checks the plumbing in about 2 minutes
# Needs scripts/setup.sh to have run and ../shared beside the checkout. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/run_benchmarks.py "$@"
