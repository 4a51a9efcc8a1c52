"""Interop tests run the real IPFS JS packages; skip cleanly where they are absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).resolve().parent


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (INTEROP_DIR / "node_modules" / "ipfs-unixfs-importer").is_dir():
        return "tests/interop/node_modules is missing (run `npm ci` in tests/interop)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if INTEROP_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.interop)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
