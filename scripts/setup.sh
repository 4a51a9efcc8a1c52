#!/usr/bin/env bash
# Install what Shoal needs into ./.venv (and, for the tests, tests/interop/node_modules).
#
#   scripts/setup.sh            everything the tests need: shoal with its test and
#                               plot extras, and the interop tests' npm packages
#                               (used by scripts/test.sh)
#   scripts/setup.sh --runtime  only what running shoal needs: shoal and its
#                               dependencies, no test tools, no Node.js
#                               (used by scripts/demo.sh)
#
# Idempotent: safe to run again; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=all
case "${1:-}" in
  "") ;;
  --runtime) MODE=runtime ;;
  *) echo "setup: unknown option ${1} (use --runtime, or nothing for everything)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$MODE" = runtime ]; then
  .venv/bin/python -m pip install -q -e .
else
  .venv/bin/python -m pip install -q -e '.[test,plot]'
fi
# An editable install compiles nothing, and with PYTHONDONTWRITEBYTECODE set
# (as on these machines) every `shoal` start would compile store/, p2p/ and
# cli/ from source again (~50 ms of each command's start). Stale .pyc files
# are harmless: Python checks each against its source and ignores it if changed.
.venv/bin/python -m compileall -q store p2p cli >/dev/null
if [ "$MODE" = runtime ]; then
  exit 0
fi
# An old (0.x) Hugging Face client, which lists a repo's files from `siblings`,
# beside the pinned current one: tests run it with PYTHONPATH=.venv/hf-old.
if [ ! -f .venv/hf-old/huggingface_hub-0.20.3.dist-info/METADATA ]; then
  .venv/bin/python -m pip install -q --target .venv/hf-old huggingface_hub==0.20.3 >/dev/null
fi
if command -v npm >/dev/null 2>&1; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "setup: npm not found; interop tests will be skipped" >&2
fi
