"""Issue 12 A3: a corrupt block is reported by CID, moved aside by
`verify(repair=True)`, and healed by a re-put, which never dedupes against it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from shoal.store.dag import exporter
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, block_key, make_cid
from shoal.store.errors import HashMismatch
from shoal.store.persist.flatfs import FlatfsBlockstore, shard_of
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.persist.repo import QUARANTINE_DIR, Repo

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=1024, max_links=4)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


def _block_path(repo: Repo, key: str) -> Path:
    return repo.path / "blocks" / shard_of(key) / f"{key}.data"


def _file(tmp_path: Path, size: int) -> Path:
    p = tmp_path / "weights.bin"
    p.write_bytes(bytes((i * 7 + i // 997) % 251 for i in range(size)))
    return p


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size: only a content check can tell
    path.write_bytes(bytes(raw))


def _dag(repo: Repo, root: CID) -> tuple[CID, CID]:
    """(an inner dag-pb node that is not the root, a raw leaf) of the DAG."""
    cids = [c for c, _ in exporter.walk_dag(repo.blockstore, root)]
    inner = next(c for c in cids[1:] if c.codec.name == "dag-pb")
    leaf = next(c for c in cids if c.codec.name == "raw")
    return inner, leaf


def test_reput_heals_a_corrupt_block_instead_of_deduping(repo: Repo, tmp_path: Path) -> None:
    src = _file(tmp_path, 20_000)
    res = repo.add(src, profile=SMALL)
    inner, leaf = _dag(repo, res.cid)
    _flip(_block_path(repo, block_key(leaf)))
    _flip(_block_path(repo, block_key(inner)))
    with pytest.raises(HashMismatch):
        b"".join(exporter.read_file(repo.blockstore, res.cid))
    again = repo.add(src, profile=SMALL)
    assert again.cid == res.cid
    assert b"".join(exporter.read_file(repo.blockstore, res.cid)) == src.read_bytes()
    assert repo.verify().ok


def test_verify_names_cids_and_repair_quarantines(repo: Repo, tmp_path: Path) -> None:
    src = _file(tmp_path, 20_000)
    res = repo.add(src, profile=SMALL)
    inner, leaf = _dag(repo, res.cid)
    _flip(_block_path(repo, block_key(leaf)))
    _flip(_block_path(repo, block_key(inner)))
    report = repo.verify()
    assert sorted(report.corrupt_blocks) == sorted([str(inner), str(leaf)])  # CIDs, not flatfs keys
    assert report.quarantined == []
    assert _block_path(repo, block_key(leaf)).exists()

    report = repo.verify(repair=True)
    assert not report.ok
    assert sorted(report.quarantined) == sorted([str(inner), str(leaf)])
    assert not repo.blockstore.has(leaf) and not repo.blockstore.has(inner)
    kept = sorted(p.name for p in (repo.path / QUARANTINE_DIR).iterdir())
    assert kept == sorted(f"{block_key(c)}.data" for c in (inner, leaf))
    assert {m for _, m in report.incomplete_pins} >= {str(inner)}
    repo.add(src, profile=SMALL)  # what the quarantine is for: the re-put restores them
    report = repo.verify()
    assert report.ok and report.corrupt_blocks == []


def test_quarantine_leaves_a_good_block_alone(repo: Repo) -> None:
    data = b"fine"
    cid = make_cid("raw", data)
    repo.blockstore.put(cid, data)
    assert repo.quarantine(cid) is False and repo.blockstore.get(cid) == data
    _block_path(repo, block_key(cid)).write_bytes(b"rot!")
    assert repo.quarantine(cid) is True and not repo.blockstore.has(cid)
    assert repo.quarantine(cid) is False  # gone: nothing to move


def test_unreferenced_corrupt_block_is_named_by_its_raw_cid(repo: Repo) -> None:
    data = b"orphan"
    cid = make_cid("raw", data)
    repo.blockstore.put(cid, data)
    _block_path(repo, block_key(cid)).write_bytes(b"orphan?")
    assert repo.verify().corrupt_blocks == [str(cid)]


@pytest.mark.parametrize("store_kind", ["flatfs", "memory"])
def test_put_overwrites_a_same_size_corrupt_copy(tmp_path: Path, store_kind: str) -> None:
    data = bytes(range(256)) * 8
    cid = make_cid("raw", data)
    bad = bytes([data[0] ^ 1]) + data[1:]
    if store_kind == "flatfs":
        store: FlatfsBlockstore | MemoryBlockstore = FlatfsBlockstore(tmp_path / "b")
        store.put(cid, data)
        Path(store._path(block_key(cid))).write_bytes(bad)
    else:
        store = MemoryBlockstore()
        store.raw_put(block_key(cid), bad)
    with pytest.raises(HashMismatch):
        store.get(cid)
    assert store.put(cid, data) is True
    assert store.get(cid) == data
    assert store.put(cid, data) is False  # a good copy is still deduped against


def test_staged_put_overwrites_a_corrupt_copy(tmp_path: Path) -> None:
    store = FlatfsBlockstore(tmp_path / "b")
    data = b"x" * 5000
    cid = make_cid("raw", data)
    store.put(cid, data)
    Path(store._path(block_key(cid))).write_bytes(b"y" * 5000)
    stager = store.stager()
    assert stager.stage(cid, memoryview(data)) is True
    stager.close()
    assert store.get(cid) == data
