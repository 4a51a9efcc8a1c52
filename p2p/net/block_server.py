"""Serving blocks to peers: WANT_HAVE and WANT_BLOCK answered from the repo.

Blocks go out one frame at a time, as each is read (in a worker thread),
and room in the connection's send budget is taken before every read, so a
peer that stacks up requests without reading costs at most its budget. A
block whose bytes no longer match its CID is never served: it is moved
aside (quarantined) and answered as missing. Serve observers (energy
accounting, shoal.p2p.net.hooks.ServeObserver) see every WANT_BLOCK and
the bytes it sent.

Not here: which requests reach this (the node's dispatch in
shoal.p2p.net.node) or fetching blocks (shoal.p2p.exchange.fetch).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Protocol

import trio

from shoal.store.errors import BlockNotFound, HashMismatch, StoreError
from shoal.store.ipld.cid import CID, cid_from_bytes
from shoal.store.persist.blockstore import Blockstore

from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.net.hooks import SentBytes, ServeObserver
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import Block, BlockMissing, DontHave, Have, Message

log = logging.getLogger("shoal.node")

__all__ = ["BlockServer", "ServedStore"]


class ServedStore(Protocol):
    """What serving needs of a repo: its blockstore and the quarantine.

    The node passes its Repo; a lane process (shoal.p2p.lanes.worker), which
    opens only the repo's blockstore, passes its own small store.
    """

    @property
    def blockstore(self) -> Blockstore: ...

    def quarantine(self, cid: CID) -> bool:
        """Move a block found corrupt aside; False if it is absent or good."""
        ...


class BlockServer:
    """Answers WANT_HAVE and WANT_BLOCK for one repo; counts the block bytes it sent."""

    def __init__(self, repo: ServedStore, observers: list[ServeObserver]) -> None:
        """`observers` is the node's list, shared: services added later are seen too."""
        self.repo = repo
        self.observers = observers
        self.served_bytes = 0

    async def want_have(self, rid: int, cids: tuple[bytes, ...]) -> list[Message]:
        """WANT_HAVE: which of `cids` this repo has (Have) and has not (DontHave).

        The lookups (up to 256 a message, a stat each) run in a worker
        thread: on the loop, a peer streaming WANT_HAVEs turned cheap bytes
        into event-loop time (cold-cache stats of milliseconds each) that
        every other peer and the API waited for.
        """
        present = await trio.to_thread.run_sync(self._present, cids)
        have = [raw for raw, here in zip(cids, present) if here]
        missing = [raw for raw, here in zip(cids, present) if not here]
        out: list[Message] = []
        if have:
            out.append(Have(rid, tuple(have)))
        if missing:
            out.append(DontHave(rid, tuple(missing)))
        return out

    def _present(self, cids: tuple[bytes, ...]) -> list[bool]:
        """Worker thread: which of `cids` are in the repo (a malformed CID is not)."""
        out: list[bool] = []
        for raw in cids:
            try:
                out.append(self.repo.blockstore.has(cid_from_bytes(raw)))
            except StoreError:
                out.append(False)
        return out

    def _quarantine_quietly(self, cid: CID) -> None:
        """Worker thread: move a corrupt block aside; a failure only leaves it in place."""
        try:
            self.repo.quarantine(cid)
        except (StoreError, OSError) as exc:
            log.warning("cannot quarantine corrupt block %s: %s", cid, exc)

    async def serve(self, conn: PeerConnection, rid: int, cids: tuple[bytes, ...]) -> int:
        """Send each block (or BlockMissing) as soon as it is read; returns block bytes sent.

        Room in the connection's send budget is taken before each disk read
        and given back once the frame is on the socket, so however many
        requests a peer stacks up without reading, the blocks held for it
        stay under the budget.
        """
        with ExitStack() as observing:
            counters: list[SentBytes] = [observing.enter_context(o.serving(conn.remote_peer))
                                         for o in self.observers]
            return await self._send(conn, rid, cids, counters)

    async def _send(self, conn: PeerConnection, rid: int, cids: tuple[bytes, ...],
                           counters: list[SentBytes]) -> int:
        sent = 0
        for raw in cids:
            taken = await conn.send_budget.acquire(L.MAX_BLOCK_BYTES)
            try:
                if conn.closed:
                    # Room came back because the connection died (a stalled
                    # peer is closed): read nothing more for it.
                    break
                try:
                    cid = cid_from_bytes(raw)
                    data = await trio.to_thread.run_sync(self.repo.blockstore.get, cid)
                except HashMismatch:
                    # Never serve it, and stop finding it: moved aside, it is missing
                    # until a fetch or re-put restores it (issue 12 A3).
                    await trio.to_thread.run_sync(self._quarantine_quietly, cid)
                    reply: Message = BlockMissing(rid, raw)
                except (BlockNotFound, StoreError):
                    reply = BlockMissing(rid, raw)
                else:
                    conn.send_budget.release(taken - min(taken, len(data)))  # blocks are mostly 1 MiB
                    taken = min(taken, len(data))
                    reply = Block(rid, raw, data)
                    del data
                if not await conn.reply(reply):
                    break  # gone: read nothing more for it
                if isinstance(reply, Block):
                    sent += len(reply.data)
                    self.served_bytes += len(reply.data)
                    for counter in counters:
                        counter.bytes_sent += len(reply.data)
            finally:
                conn.send_budget.release(taken)
        return sent
