"""A fetch's walk over the blocks already stored (a resumed fetch, `fetch` or
`pin add` of an object that is all here) makes no store call on the event
loop: raw leaves were checked with one `has` each on the loop, up to 1,024
between two awaits, stalling every peer and the API on a slow disk."""

from __future__ import annotations

import random
import threading
from typing import Any

import trio

from shoal.p2p.exchange.fetch import LEAF_BATCH, _Fetch
from shoal.store.chunking.profiles import UNIXFS_V1_2025
from shoal.store.dag.exporter import walk_dag
from shoal.store.dag.importer import import_bytes
from shoal.store.ipld.cid import CID
from shoal.store.persist.blockstore import MemoryBlockstore
from tests.unit.test_fetch_integrity import FakeNode


class ThreadRecordingStore(MemoryBlockstore):
    def __init__(self) -> None:
        super().__init__()
        self.on_loop = 0
        self.calls = 0
        self.loop_thread: int | None = None

    def _note(self) -> None:
        self.calls += 1
        if threading.get_ident() == self.loop_thread:
            self.on_loop += 1

    def has(self, cid: CID) -> bool:
        self._note()
        return super().has(cid)

    def get(self, cid: CID) -> bytes:
        self._note()
        return super().get(cid)


def test_local_walk_runs_no_store_call_on_the_loop() -> None:
    store = ThreadRecordingStore()
    data = random.Random(7).randbytes(3000 * 64)  # 3,000 distinct leaves
    profile = UNIXFS_V1_2025.with_overrides(chunk_size=64, max_links=1024)
    root = import_bytes(data, store, profile).cid

    async def run() -> tuple[int, list[bytes]]:
        store.loop_thread = threading.get_ident()
        node: Any = FakeNode(store, {})
        fetch = _Fetch(node, root, None, 20.0, 16)
        wanted: list[bytes] = []
        fetch.on_wanted = lambda cid: wanted.append(bytes(cid))
        await fetch._consider([root])
        return fetch.result.local_blocks, wanted

    # One leaf gone: it is wanted, everything else counted local.
    blocks = [c for c, _ in walk_dag(store, root)]
    missing_leaf = next(c for c in reversed(blocks) if c.codec.name == "raw")
    store.delete(missing_leaf)
    store.calls = 0
    local, wanted = trio.run(run)
    assert store.calls > LEAF_BATCH  # the walk did look at every block
    assert store.on_loop == 0
    distinct = {bytes(c) for c in blocks}
    assert wanted == [bytes(missing_leaf)]
    assert local == len(distinct) - 1


def test_range_walk_runs_no_store_call_on_the_loop() -> None:
    from shoal.p2p.exchange.range_fetch import RangeFetchResult, RangeWalk, _RangeFetch

    store = ThreadRecordingStore()
    data = random.Random(8).randbytes(3000 * 64)
    profile = UNIXFS_V1_2025.with_overrides(chunk_size=64, max_links=1024)
    root = import_bytes(data, store, profile).cid

    async def run() -> int:
        store.loop_thread = threading.get_ident()
        node: Any = FakeNode(store, {})
        fetch = _RangeFetch(node, RangeWalk(root, 100, 2500 * 64), RangeFetchResult(root), 20.0, 16)
        await fetch._consider(fetch.walk.start())
        assert not fetch.waiting
        return fetch.result.local_blocks

    store.calls = 0
    local = trio.run(run)
    assert local > 2500 and store.calls > LEAF_BATCH
    assert store.on_loop == 0
