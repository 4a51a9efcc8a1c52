"""One behavioural suite for every Blockstore: in-memory and on-disk must agree."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

from shoal.store.persist.blockstore import Blockstore, MemoryBlockstore
from shoal.store.ipld.cid import block_key, make_cid
from shoal.store.errors import BlockNotFound, HashMismatch
from shoal.store.persist.flatfs import FlatfsBlockstore

# Interesting sizes, as iroh-blobs tests do: empty, tiny, around powers of two, 1 MiB.
SIZES = [0, 1, 255, 256, 4095, 4096, 4097, 65536, 1024 * 1024]


@pytest.fixture(params=["memory", "flatfs"])
def bs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blockstore]:
    if request.param == "memory":
        yield MemoryBlockstore()
    else:
        yield FlatfsBlockstore(tmp_path / "blocks")


@pytest.mark.parametrize("size", SIZES)
def test_roundtrip_sizes(bs: Blockstore, size: int) -> None:
    data = os.urandom(size)
    cid = make_cid("raw", data)
    assert not bs.has(cid)
    assert bs.put(cid, data) is True
    assert bs.has(cid)
    assert bs.get(cid) == data
    assert bs.size(cid) == size
    assert list(bs.keys()) == [block_key(cid)]


def test_put_twice_stores_once(bs: Blockstore) -> None:
    cid = make_cid("raw", b"hello")
    assert bs.put(cid, b"hello") is True
    assert bs.put(cid, b"hello") is False
    assert bs.put_trusted(cid, b"hello") is False
    assert list(bs.keys()) == [block_key(cid)]


def test_put_rejects_wrong_bytes(bs: Blockstore) -> None:
    cid = make_cid("raw", b"right")
    with pytest.raises(HashMismatch):
        bs.put(cid, b"wrong")
    assert not bs.has(cid)
    assert list(bs.keys()) == []


def test_missing_block(bs: Blockstore) -> None:
    cid = make_cid("raw", b"absent")
    with pytest.raises(BlockNotFound):
        bs.get(cid)
    with pytest.raises(BlockNotFound):
        bs.size(cid)
    bs.delete(cid)  # deleting an absent block is not an error


def test_delete(bs: Blockstore) -> None:
    a, b = make_cid("raw", b"a"), make_cid("raw", b"b")
    bs.put(a, b"a")
    bs.put(b, b"b")
    bs.delete(a)
    assert not bs.has(a) and bs.has(b)
    assert list(bs.keys()) == [block_key(b)]


def test_keyed_by_multihash_not_cid(bs: Blockstore) -> None:
    data = b"\x0a\x02\x08\x01"  # any bytes: keys ignore the codec and version
    v1 = make_cid("dag-pb", data)
    v0 = make_cid("dag-pb", data, version=0)
    raw = make_cid("raw", data)
    bs.put(v1, data)
    assert bs.has(v0) and bs.has(raw)
    assert bs.get(v0) == data
    assert bs.put(v0, data) is False


def test_concurrent_put_trusted(bs: Blockstore) -> None:
    blobs = [os.urandom(1000 + i) for i in range(200)]
    cids = [make_cid("raw", d) for d in blobs]
    newly: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        # Every thread puts every block: exactly one put per block wins.
        mine = [bs.put_trusted(c, d) for c, d in zip(cids, blobs)]
        with lock:
            newly.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(newly) == len(cids)
    assert sorted(bs.keys()) == sorted(block_key(c) for c in cids)
    for c, d in zip(cids, blobs):
        assert bs.get(c) == d
