"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from shoal.store.persist.index import Index


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, for real ENOSPC, if this process may mount one (root in CI)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: an open handle cannot keep it


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    """A fresh repo index (the persisted tables' home), closed after the test."""
    idx = Index(tmp_path / "index.sqlite")
    try:
        yield idx
    finally:
        idx.close()
