"""Fetch only the part of a remote file DAG that covers a byte range.

Why: reading one tensor of a 10 GB checkpoint held by another peer should
move that tensor's blocks, not the checkpoint. The walk starts at the root
and, at every File node, asks only for the children whose byte span (from
the node's blocksizes) overlaps the range, exactly as
`shoal.store.dag.exporter.read_file` skips subtrees locally. Interior nodes on the
path and the covering leaves are fetched; nothing else.

Split as elsewhere in p2p/: `RangeWalk` is the pure part (which blocks a
range needs, given the blocks seen so far; checks every node's
bookkeeping), and `fetch_range` is the trio driver that feeds it blocks
from the local store or from holders via `shoal.p2p.exchange.planner.FetchPlanner`. Every
block is hash-verified (`Blockstore.put`/`get`) before its links are read,
and stored, so a later `exporter.read_file` of the same range runs locally
and a repeated fetch is free. Fetched blocks are not pinned: they are a
cache that `gc` may drop.

Not here: directories (a range of a directory is meaningless; the walk
stops at a non-file node and leaves the error to the exporter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import trio

from shoal.store.dag.walk import DagWalk
from shoal.store.ipld import dagpb, unixfs
from shoal.store.ipld.cid import CID, DAG_PB, RAW, cid_from_bytes
from shoal.store.errors import (
    BlockNotFound, HashMismatch, InvalidCID, InvalidInput, MalformedBlock, StoreError,
)

from shoal.p2p.exchange.fetch import LEAF_BATCH, FetchFailed, PlannedFetch, _read_if_present
from shoal.p2p.secure.identity import PeerId

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = ["RangeWalk", "RangeFetchResult", "fetch_range", "fetch_ranges", "missing_range_blocks"]

log = logging.getLogger("shoal.range_fetch")

# (kind, holder, block key, block bytes): what a request task reports to the driver loop
_Event = tuple[str, PeerId, bytes, Optional[bytes]]
# (absolute start of the node's content, size its parent promised or None at the root)
_Position = tuple[int, "int | None"]


class RangeWalk:
    """Which blocks of a file DAG cover [offset, end): a pure, incremental walk.

    `start()` gives the root; each `on_block(cid, data)` (verified bytes)
    returns the children now needed. Positions are tracked per block, so a
    block that occurs twice in the file (deduplicated leaves) is expanded
    for each distinct window the range takes of it: every occurrence the
    range covers whole needs the same children, so it is expanded once.
    Without that, six blocks linking each other 1,024 times a level (an
    exabyte declared) meant 2^30 occurrences to walk, in memory and on the
    event loop; now the work is bounded by the distinct blocks times the
    few windows at the range's two ends. MalformedBlock if a node's sizes
    do not add up.
    """

    def __init__(self, root: CID, offset: int, length: int | None) -> None:
        if offset < 0 or (length is not None and length < 0):
            raise InvalidInput("offset and length must be non-negative")
        self.root = root
        self.offset = offset
        self.end = None if length is None else offset + length
        self._positions: dict[bytes, list[_Position]] = {}
        self._cids: dict[bytes, CID] = {}
        self._windows: set[tuple[bytes, int | None, int, int | None]] = set()

    @property
    def empty(self) -> bool:
        return self.end is not None and self.end <= self.offset

    def start(self) -> list[CID]:
        return [] if self.empty else self._want(self.root, 0, None)

    def cid_for(self, key: bytes) -> CID:
        return self._cids[key]

    def _want(self, cid: CID, start: int, promised: int | None) -> list[CID]:
        key = bytes(cid)
        # The part of this occurrence the range needs, relative to its start:
        # occurrences with the same window (and the same promised size, which
        # `_expand` checks) need exactly the same blocks below them.
        lo = max(self.offset - start, 0)
        hi = None if self.end is None else self.end - start
        if hi is not None and promised is not None and hi >= promised:
            hi = None  # covered to its end, as with no end at all
        window = (key, promised, lo, hi)
        if window in self._windows:
            return []
        self._windows.add(window)
        self._positions.setdefault(key, []).append((start, promised))
        self._cids[key] = cid
        return [cid]

    def on_block(self, cid: CID, data: bytes) -> list[CID]:
        """Expand every pending occurrence of this block; return the children needed."""
        positions = self._positions.pop(bytes(cid), [])
        wanted: list[CID] = []
        for start, promised in positions:
            wanted += self._expand(cid, data, start, promised)
        return wanted

    def leaf_present(self, cid: CID) -> None:
        """A raw leaf already held locally: done, without reading it (readers verify it)."""
        self._positions.pop(bytes(cid), None)

    def _expand(self, cid: CID, data: bytes, start: int, promised: int | None) -> list[CID]:
        if cid.codec.name == RAW:
            if promised is not None and len(data) != promised:
                raise MalformedBlock(f"{cid}: raw leaf of {len(data)} bytes, parent says {promised}")
            return []
        if cid.codec.name != DAG_PB:
            raise MalformedBlock(f"{cid}: codec {cid.codec.name} is not UnixFS")
        node = dagpb.decode(data)
        if node.data is None:
            raise MalformedBlock(f"{cid}: dag-pb node without UnixFS data")
        fs = unixfs.decode(node.data)
        if fs.type not in (unixfs.DataType.FILE, unixfs.DataType.RAW):
            return []  # not a file: the exporter reports it
        if len(fs.blocksizes) != len(node.links):
            raise MalformedBlock(f"{cid}: {len(node.links)} links but {len(fs.blocksizes)} blocksizes")
        size = fs.content_size()
        if (fs.filesize is not None and fs.filesize != size) or (promised is not None and size != promised):
            raise MalformedBlock(f"{cid}: sizes do not add up")
        child_start = start + len(fs.data or b"")
        wanted: list[CID] = []
        for link, bs in zip(node.links, fs.blocksizes):
            if child_start + bs > self.offset and (self.end is None or child_start < self.end):
                try:
                    child = cid_from_bytes(link.hash)
                except InvalidCID as exc:
                    raise MalformedBlock(f"{cid}: link to an unsupported CID: {exc}") from None
                wanted += self._want(child, child_start, bs)
            child_start += bs
        return wanted


@dataclass
class RangeFetchResult:
    """What a range fetch moved: blocks/bytes from peers, blocks found locally."""

    cid: CID
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    local_blocks: int = 0
    holders: list[PeerId] = field(default_factory=list)


async def fetch_range(node: "Node", cid: CID, offset: int = 0, length: int | None = None, *,
                      holders: list[PeerId] | None = None, request_timeout: float = 20.0,
                      max_inflight_per_peer: int = 16) -> RangeFetchResult:
    """Make the blocks covering file bytes [offset, offset+length) of `cid` local, verified.

    Asks connected peers for the root only if something is missing (or uses
    `holders`). Raises NoPeers if nobody has it, FetchFailed if some block
    could not be had or the DAG is malformed.
    """
    return (await fetch_ranges(node, cid, [(offset, length)], holders=holders,
                               request_timeout=request_timeout,
                               max_inflight_per_peer=max_inflight_per_peer))


async def fetch_ranges(node: "Node", cid: CID, ranges: list[tuple[int, int | None]], *,
                       holders: list[PeerId] | None = None, request_timeout: float = 20.0,
                       max_inflight_per_peer: int = 16) -> RangeFetchResult:
    """`fetch_range` for several ranges of one file, one after the other, sharing holders."""
    result = RangeFetchResult(cid, holders=list(holders or []))
    async with node.store_guard.shared():
        for offset, length in ranges:
            driver = _RangeFetch(node, RangeWalk(cid, offset, length), result,
                                 request_timeout, max_inflight_per_peer)
            await driver.run()
            # Success is a claim about the store, not about the walk: check it.
            missing = await trio.to_thread.run_sync(missing_range_blocks, node.repo.blockstore,
                                                    cid, offset, length)
            if missing:
                raise FetchFailed(f"fetch of {cid} [{offset}, +{length}) ended with {len(missing)} "
                                  f"blocks missing, e.g. {missing[0]}")
    return result


def missing_range_blocks(store: Any, cid: CID, offset: int, length: int | None,
                         limit: int = 16) -> list[CID]:
    """Blocks covering [offset, offset+length) of the file `cid` that are not
    in `store` (inner nodes: absent or corrupt), up to `limit`. A worker thread's job."""
    walk = RangeWalk(cid, offset, length)
    missing: list[CID] = []
    blocks = DagWalk(walk.start(), key=None)  # a block once per span it covers
    for block in blocks:
        if len(missing) >= limit:
            break
        if block.codec.name == RAW:
            if not store.has(block):
                missing.append(block)
            walk.leaf_present(block)
            continue
        try:
            data = store.get(block)
        except (BlockNotFound, HashMismatch):
            missing.append(block)
            continue
        try:
            blocks.push(walk.on_block(block, data))
        except StoreError as exc:
            raise FetchFailed(f"block {block} of {cid} is malformed: {exc}") from None
    return missing


class _RangeFetch(PlannedFetch):
    """The trio driver: local blocks first, then the planner over the holders."""

    def __init__(self, node: "Node", walk: RangeWalk, result: RangeFetchResult,
                 request_timeout: float, max_inflight_per_peer: int) -> None:
        super().__init__(node, request_timeout, max_inflight_per_peer, result)
        self.result: RangeFetchResult = result
        self.walk = walk
        self.waiting: set[bytes] = set()
        # No dedupe in the walk: `RangeWalk` tracks each span a block covers,
        # and a block already asked for is skipped through `waiting` instead.
        self.blocks = DagWalk(key=None)

    async def run(self) -> None:
        await self._consider(self.walk.start())
        if not self.waiting:
            return
        self.result.holders = await self._drive(self.walk.root, self.result.holders or None)

    def _cid_for(self, key: bytes) -> CID:
        return self.walk.cid_for(key)

    async def _on_block(self, key: bytes, cid: CID, data: bytes) -> None:
        self.waiting.discard(key)
        await self._consider(self._expand(cid, data))

    async def _consider(self, cids: list[CID]) -> None:
        """Expand blocks we already hold; queue the rest (each key once).

        The shared `DagWalk` gives the order; `RangeWalk` decides which
        links of a block to follow (those covering the range). As in the
        whole-DAG fetch, no store call runs on the event loop: raw leaves
        are checked in batches, inner nodes looked up and read in one hop."""
        self.blocks.push(cids)
        leaves: list[CID] = []
        for cid in self.blocks:
            key = bytes(cid)
            if key in self.waiting:
                continue  # its arrival expands every occurrence
            if cid.codec.name == RAW:
                leaves.append(cid)
                if len(leaves) >= LEAF_BATCH:
                    await self._leaves(leaves)
                    leaves = []
                continue
            if leaves:
                await self._leaves(leaves)
                leaves = []
            try:
                data = await trio.to_thread.run_sync(_read_if_present, self.store, cid)
            except HashMismatch:
                await trio.to_thread.run_sync(self.node.repo.quarantine, cid)  # corrupt: move aside, fetch a good one
                data = None
            if data is None:
                self.waiting.add(key)
                self.planner.want([key])
                continue
            self.result.local_blocks += 1
            self.blocks.push(self._expand(cid, data))
        if leaves:
            await self._leaves(leaves)

    async def _leaves(self, leaves: list[CID]) -> None:
        """Raw leaves met by the walk, in order: done if present, else wanted (once)."""
        present = await trio.to_thread.run_sync(lambda: [self.store.has(c) for c in leaves])
        for cid, here in zip(leaves, present):
            key = bytes(cid)
            if here:
                self.result.local_blocks += 1
                self.walk.leaf_present(cid)  # no links: nothing to read now
            elif key not in self.waiting:
                self.waiting.add(key)
                self.planner.want([key])

    def _expand(self, cid: CID, data: bytes) -> list[CID]:
        try:
            return self.walk.on_block(cid, data)
        except StoreError as exc:
            raise FetchFailed(f"block {cid} of {self.walk.root} is malformed: {exc}") from None
