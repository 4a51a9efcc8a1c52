"""The gateway's on-demand blocks through the node's lanes (issue 14 item 9, issue 15).

A node that runs lane processes (`--lanes N`, shoal.p2p.lanes) serves a
file it lacks without moving the file's bytes through its own loop: each
block the response's reader misses is a LaneJob (`want_data=True`) that
one of our lanes runs against a holder's lane (Noise, the SHA-256 check and
the durable put happen in the lane), and the verified bytes come back over
the lane's control channel to be sent to the client. The lane belongs to
the node, so its check is the node's check: this process does not hash the
block again.

Which block from whom, retries, a corrupt holder dropped: the laned get's
dispatcher (shoal.p2p.exchange.laned.LaneDispatcher.get_block), one per
response, over the holders of the file that advertise lanes.

Memory and work are bounded per response by the reader: the exporter's
read-ahead (`read_file(prefetch=...)`, a few blocks, a few threads) is the
only source of jobs, so at most `PREFETCH_BLOCKS` blocks are in flight or
waiting to be sent, and the pool bounds the jobs per lane across responses.

Used only when it can work: `lane_blocks` yields None when our node runs no
lanes (the caller serves exactly as before: shoal.p2p.gateway.files.
OnDemandBlocks, fetch_dag), and a LaneBlocks whose file has no holder with
lanes hands each missing block to the caller's own fetch. Directories and
the root of a /ipfs/ path are still read through the caller's source (small
blocks; a CID nobody has stays a 404).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

import trio

from shoal.store.errors import BlockNotFound
from shoal.store.ipld.cid import CID

from shoal.p2p.exchange.fetch import find_holders
from shoal.p2p.exchange.laned import LaneDispatcher
from shoal.p2p.secure.identity import PeerId

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = ["LaneBlocks", "lane_blocks", "lane_holders"]

log = logging.getLogger("shoal.gateway")


class LaneBlocks:
    """A thread-safe block source: our store, else a lane's fetch (bytes handed back).

    The holders are looked up at the first block missing from our store
    (a cached file costs nothing more), unless the caller knows them; if none
    advertises lanes, every missing block goes to `fallback` (the fetch in
    this process, as without lanes) and is read from the store after it.
    `fetched_blocks`/`fetched_bytes` count what the lanes brought (tests, logs)."""

    def __init__(self, node: "Node", root: CID, nursery: trio.Nursery,
                 fallback: Callable[[CID], Awaitable[None]], holders: list[PeerId] | None = None) -> None:
        self._node = node
        self._root = root
        self._nursery = nursery
        self._fallback = fallback
        self._holders = holders
        self._store = node.repo.blockstore
        self._token = trio.lowlevel.current_trio_token()
        self._dispatcher: LaneDispatcher | None = None
        self._setup = trio.Lock()
        self.only_local = False
        self.fetched_blocks = 0
        self.fetched_bytes = 0

    def get(self, cid: CID) -> bytes:
        """(A worker thread.) Verified bytes of `cid`; P2PError/StoreError if no holder gives it."""
        try:
            return self._store.get(cid)
        except BlockNotFound:
            if self.only_local:
                raise
        data = trio.from_thread.run(self._fetch, cid, trio_token=self._token)
        if data is None:  # the fallback stored it, or another reader's job did
            return self._store.get(cid)
        self.fetched_blocks += 1
        self.fetched_bytes += len(data)
        return data

    async def _fetch(self, cid: CID) -> bytes | None:
        dispatcher = await self._dispatcher_for()
        if dispatcher is None:
            await self._fallback(cid)
            return None
        # Shared with gc's exclusive hold while the lane writes (as any fetch).
        async with self._node.store_guard.shared():
            return await dispatcher.get_block(cid)

    async def _dispatcher_for(self) -> LaneDispatcher | None:
        async with self._setup:
            if self._holders is None:
                self._holders = await lane_holders(self._node, self._root)
            pool = self._node.lanes
            if self._dispatcher is None and self._holders and pool is not None:
                node = self._node
                dispatcher = LaneDispatcher(pool, self._holders, lane_addrs=node.peer_lane_addrs,
                                            store=node.repo.blockstore, peers=node.peers,
                                            quarantine=node.repo.quarantine)
                await self._nursery.start(dispatcher.run)
                self._dispatcher = dispatcher
            return self._dispatcher

    def outcomes(self) -> dict[str, int]:
        """The lane jobs' outcomes so far, counted ({} if no lane was asked)."""
        return dict(self._dispatcher.stats.outcomes) if self._dispatcher is not None else {}


async def lane_holders(node: "Node", root: CID) -> list[PeerId]:
    """Connected peers that have `root` and advertise lanes; [] if our node runs none."""
    pool = node.lanes
    if pool is None or pool.size == 0:
        return []
    if not any(node.peer_lane_addrs(p) for p in node.connected_peers()):
        return []
    return [p for p in await find_holders(node, root) if node.peer_lane_addrs(p)]


@asynccontextmanager
async def lane_blocks(node: "Node", root: CID, fallback: Callable[[CID], Awaitable[None]], *,
                      holders: list[PeerId] | None = None) -> AsyncIterator[LaneBlocks | None]:
    """A `LaneBlocks` for reading the file `root` (its dispatcher, once started,
    runs until the block ends), or None when our node runs no lanes."""
    if node.lanes is None:
        yield None
        return
    async with trio.open_nursery() as nursery:
        blocks = LaneBlocks(node, root, nursery, fallback, holders)
        try:
            yield blocks
        finally:
            nursery.cancel_scope.cancel()
            if blocks.fetched_blocks:
                log.debug("gateway: %s: %d blocks through lanes (%s)", root, blocks.fetched_blocks,
                          blocks.outcomes())
