"""The node's own reads heal corrupt local blocks from the swarm.

Why: a bit flip on the owner's disk used to make its `get` and `cat` fail
although a connected peer held a good copy. A block read that fails its
hash check (HashMismatch) now moves the bad file to `<repo>/quarantine/`
(`Repo.quarantine`) and fetches the block, hash-checked, from whoever has
it (`fetch_dag` of that block: a leaf alone, or an inner node and anything
under it that is missing). The reader then gets the good bytes. Only if no
peer can supply it does the read fail, with the original HashMismatch.

`HealingBlocks.get` runs in worker threads (exports read ahead on their own
thread pool), so it reaches the event loop through the trio token taken
when it was made. The fetch does not take the node's store guard: readers
that hold it shared (`get`) would otherwise wait behind a gc that waits for
them.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import trio

from shoal.store.ipld.cid import CID
from shoal.store.errors import BlockNotFound, HashMismatch, StoreError

from shoal.p2p.errors import P2PError

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.heal")


class HealingBlocks:
    """A thread-safe block source over the node's store whose corrupt blocks
    are replaced from peers on read. Make it on the event loop."""

    def __init__(self, node: "Node", *, refetch_missing: bool = False) -> None:
        self._node = node
        # `cat` makes its range local, then streams it under the store guard:
        # a gc that ran in between may have evicted a cached (unpinned) block,
        # which is then fetched again instead of failing the read.
        self._refetch_missing = refetch_missing
        self._store = node.repo.blockstore
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self.healed = 0  # blocks replaced from peers

    def get(self, cid: CID) -> bytes:
        try:
            return self._store.get(cid)
        except HashMismatch as exc:
            corrupt = exc
        except BlockNotFound:
            if not self._refetch_missing:
                raise
            log.info("block %s went missing since it was fetched (gc?): fetching it again", cid)
            trio.from_thread.run(self._fetch, cid, trio_token=self._token)
            return self._store.get(cid)
        log.warning("local block %s is corrupt: moved to quarantine, fetching a good copy", cid)
        try:
            self._node.repo.quarantine(cid)
            trio.from_thread.run(self._fetch, cid, trio_token=self._token)
            data = self._store.get(cid)
        except (P2PError, StoreError, OSError) as exc:
            raise HashMismatch(cid, f"corrupt locally and not to be had from a peer ({exc})") from corrupt
        with self._lock:
            self.healed += 1
        return data

    async def _fetch(self, cid: CID) -> None:
        from shoal.p2p.exchange.fetch import fetch_dag

        await fetch_dag(self._node, cid, guard=False)
