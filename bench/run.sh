#!/usr/bin/env bash
# All benchmarks, captioner next to the plain-PyTorch reference ../shared/pyref: prints the table and writes bench/RESULTS.md.
#   bench/run.sh            full run (about 18 minutes on 2 cores; the first also caches pyref's features)
#   bench/run.sh --quick    100 photos, no training: checks the plumbing in about a minute
# Needs scripts/setup.sh to have run and ../shared beside the checkout. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/run_benchmarks.py "$@"
