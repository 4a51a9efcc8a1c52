#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: unit, property, interop
# (real IPFS JS packages) and integration (real shoal node processes), after
# mypy --strict over the packages (scripts/typecheck.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/typecheck.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
