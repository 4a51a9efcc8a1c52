#!/usr/bin/env bash
# mypy --strict over the installed import names shoal.store, shoal.p2p, shoal.cli.
# The folders store/, p2p/ and cli/ install as shoal.* through setuptools'
# package-dir (an editable install maps them with an import hook, which mypy
# does not follow), so mypy reads them through a throwaway link tree
# shoal/{store,p2p,cli} -> the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/shoal"
for d in store p2p cli; do ln -s "$PWD/$d" "$tree/shoal/$d"; done
root=$PWD
(cd "$tree" && MYPYPATH="$tree" "$root/$PY" -m mypy --config-file "$root/pyproject.toml" \
    --cache-dir "$root/.mypy_cache" --namespace-packages --explicit-package-bases \
    -p shoal.store -p shoal.p2p -p shoal.cli)
