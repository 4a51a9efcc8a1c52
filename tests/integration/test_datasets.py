"""Datasets: a directory of 10,000 small files goes in and out through the CLI.

The directory is far over the 256 KiB threshold, so it is stored as a UnixFS
HAMT; `get` must rebuild every file and `ls` list every entry. Offline
(no node), real `shoal` processes, on-disk repo.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shoal.store.ipld import dagpb, unixfs
from shoal.store.ipld.cid import parse_cid
from shoal.store.persist.repo import Repo
from tests.helpers import MANY_NODES, run_shoal

pytestmark = [MANY_NODES, pytest.mark.integration]

N_FILES = 10_000


def test_ten_thousand_files_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    src.mkdir()
    for i in range(N_FILES):
        (src / f"sample-{i:05d}.jsonl").write_bytes(f'{{"id": {i}, "text": "row {i}"}}\n'.encode() * (1 + i % 3))
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0

    started = time.monotonic()
    put = run_shoal(repo, "put", str(src), "--quiet", timeout=240)
    assert put.code == 0, put.err
    cid = put.text.strip()
    out = tmp_path / "out"
    got = run_shoal(repo, "get", cid, "-o", str(out), timeout=240)
    assert got.code == 0, got.err
    listing = run_shoal(repo, "ls", cid, "--json", timeout=240)
    assert listing.code == 0, listing.err
    elapsed = time.monotonic() - started

    with Repo.open(repo) as r:
        root = unixfs.decode(dagpb.decode(r.blockstore.get(parse_cid(cid))).data or b"")
    assert root.type == unixfs.DataType.HAMT_SHARD and root.fanout == 256
    rows = json.loads(listing.out)
    assert sorted(row["name"] for row in rows) == sorted(p.name for p in src.iterdir())
    copied = sorted(p.name for p in out.iterdir())
    assert len(copied) == N_FILES
    for i in range(0, N_FILES, 97):
        name = f"sample-{i:05d}.jsonl"
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert all((out / p.name).stat().st_size == p.stat().st_size for p in src.iterdir())
    print(f"put+get+ls of {N_FILES} files: {elapsed:.1f}s")
    assert elapsed < 240
