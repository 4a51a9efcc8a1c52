#!/usr/bin/env bash
# Set up what running Shoal needs (setup.sh --runtime: Python packages only,
# no test tools, no Node.js) and run the main job: a local multi-peer demo swarm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
exec .venv/bin/shoal demo "$@"
