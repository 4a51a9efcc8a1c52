#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: unit, property, interop
# (real IPFS JS packages) and integration (real shoal node processes), after
# mypy --strict over the packages (scripts/typecheck.sh).
#
# The tests run on 2 pytest-xdist workers (the CI machine has 2 cores). With
# `--dist loadgroup` the modules that start swarms of nodes share one group
# (tests/helpers.py MANY_NODES), so one worker runs them one after another
# while the other runs everything else. Later arguments win: `-n 0` runs
# serially, `-n 4` on a bigger machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/typecheck.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup "$@"
