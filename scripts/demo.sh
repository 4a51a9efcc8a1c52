#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job: a local multi-peer demo swarm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/shoal demo "$@"
