"""A range fetch over a file DAG whose few blocks link each other many
times (an exabyte declared from a handful of blocks) must do work bounded by
its distinct blocks, not by the occurrences the file declares: before, every
occurrence was expanded, in memory and on the node's event loop (a `cat`
through the node of such a file never answered and never stopped)."""

from __future__ import annotations

from typing import Any

import trio

from shoal.p2p.exchange.range_fetch import RangeFetchResult, RangeWalk, _RangeFetch, missing_range_blocks
from shoal.store.dag.exporter import read_file
from shoal.store.ipld import dagpb, unixfs
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.unixfs import DataType, UnixFSData
from tests.unit.test_fetch_integrity import FakeNode


class CountingStore(MemoryBlockstore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, cid: CID) -> bytes:
        self.reads += 1
        return super().get(cid)

    def has(self, cid: CID) -> bool:
        self.reads += 1
        return super().has(cid)


def repeating_file(bs: MemoryBlockstore, width: int, depth: int) -> tuple[CID, int]:
    """`depth` file nodes, each linking the one below `width` times, over one 4-byte leaf."""
    leaf = make_cid("raw", b"abcd")
    bs.put(leaf, b"abcd")
    child, size = leaf, 4
    for _ in range(depth):
        links = tuple(dagpb.PBLink(bytes(child), "", size) for _ in range(width))
        block = dagpb.encode(dagpb.PBNode(links, unixfs.encode(
            UnixFSData(DataType.FILE, filesize=size * width, blocksizes=(size,) * width))))
        child = make_cid("dag-pb", block)
        bs.put(child, block)
        size *= width
    return child, size


def test_missing_range_blocks_work_is_bounded_by_distinct_blocks() -> None:
    store = CountingStore()
    root, size = repeating_file(store, width=64, depth=4)  # 64^4 = 16.7M leaf occurrences
    assert size == 4 * 64 ** 4
    store.reads = 0
    assert missing_range_blocks(store, root, 0, None) == []
    assert store.reads < 100
    # A window cut inside a repeated subtree: a handful of windows, still.
    store.reads = 0
    assert missing_range_blocks(store, root, 6, size - 13) == []
    assert store.reads < 100


def test_range_fetch_driver_asks_each_block_once() -> None:
    source = MemoryBlockstore()
    root, size = repeating_file(source, width=64, depth=4)

    async def run() -> list[bytes]:
        local = CountingStore()
        node: Any = FakeNode(local, {})
        driver = _RangeFetch(node, RangeWalk(root, 1, None), RangeFetchResult(root), 20.0, 16)
        wanted: list[bytes] = []
        queue: list[bytes] = []
        planner_want = driver.planner.want

        def want(keys: list[bytes]) -> None:
            wanted.extend(keys)
            queue.extend(keys)
            planner_want(keys)

        driver.planner.want = want  # type: ignore[method-assign]
        await driver._consider(driver.walk.start())
        while queue:
            key = queue.pop(0)
            cid = driver.walk.cid_for(key)
            data = source.get(cid)
            local.put(cid, data)
            await driver._on_block(key, cid, data)
        assert local.reads < 100
        assert missing_range_blocks(local, root, 1, None) == []
        return wanted

    wanted = trio.run(run)
    assert len(wanted) == len(set(wanted)) == 5  # the root, three inner nodes, the leaf


def test_repeated_window_still_reads_right_bytes() -> None:
    """The dedupe changes what is walked, not what a reader gets."""
    bs = MemoryBlockstore()
    root, size = repeating_file(bs, width=3, depth=3)
    assert missing_range_blocks(bs, root, 5, 50) == []
    assert b"".join(read_file(bs, root, 5, 50)) == (b"abcd" * 27)[5:55]
