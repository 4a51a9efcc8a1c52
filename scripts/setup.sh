#!/usr/bin/env bash
# Install everything Shoal and its tests need into ./.venv and tests/interop/node_modules.
# Idempotent: safe to run again; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,plot]'
# An editable install compiles nothing, and with PYTHONDONTWRITEBYTECODE set
# (as on these machines) every `shoal` start would compile store/, p2p/ and
# cli/ from source again (~50 ms of each command's start). Stale .pyc files
# are harmless: Python checks each against its source and ignores it if changed.
.venv/bin/python -m compileall -q store p2p cli >/dev/null
if command -v npm >/dev/null 2>&1; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "setup: npm not found; interop tests will be skipped" >&2
fi
