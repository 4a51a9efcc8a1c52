"""Peer reputation counters kept in the repo index, so a restart remembers.

Why persisted: `peers.Reputation` weights placement and holder choice. Kept
only in memory, a restart would forget that a peer served corrupt blocks or
lost a replica, and a misbehaving peer could wash its record by waiting for
(or provoking) a restart of its victims.

Table (component "reputation", registered with `shoal.store.persist.index.register_schema`):
`peer_reputation`, one row per peer id (base58 text) with the five counters
and the time of the last write.

Batched: counters change on the event loop, one increment per delivered
block, so they are never written one by one. The node calls `pending` (on
the event loop: a cheap comparison with what was last written, no I/O) and
then `write` (in a worker thread: all changed rows in ONE transaction) at
most every REPUTATION_FLUSH_INTERVAL_S and once more at a clean shutdown. A
crash loses at most the last interval's counts, which is acceptable for a
score (unlike a pin or an agreement, which are written at once). The
batching, pruning and damaged-row handling are `shoal.p2p.net.batched_table`'s,
shared with the peer table; a damaged row is skipped and deleted at the
next write.

Plain synchronous sqlite3 through `shoal.store.persist.index.Index`; no trio here.
"""

from __future__ import annotations

import logging
from typing import Final, Iterable

from shoal.store.persist.index import register_schema

from shoal.p2p.errors import P2PError
from shoal.p2p.net.batched_table import BatchedPeerTable
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.net.peers import MAX_REMEMBERED_REPUTATIONS, Counts, Reputation

__all__ = ["COMPONENT", "MIGRATIONS", "REPUTATION_FLUSH_INTERVAL_S", "MAX_STORED_REPUTATIONS", "ReputationStore"]

log = logging.getLogger("shoal.reputation")

COMPONENT = "reputation"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE peer_reputation (
        peer_id TEXT PRIMARY KEY,
        delivered INTEGER NOT NULL DEFAULT 0,
        corrupt INTEGER NOT NULL DEFAULT 0,
        timeouts INTEGER NOT NULL DEFAULT 0,
        proven_losses INTEGER NOT NULL DEFAULT 0,
        audit_timeouts INTEGER NOT NULL DEFAULT 0,
        updated REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)
register_schema(COMPONENT, MIGRATIONS)

REPUTATION_FLUSH_INTERVAL_S: Final = 5.0
"""Changed counters are written at most this often (plus once at shutdown):
one small transaction every few seconds instead of one per delivered block;
a crash loses at most this many seconds of counts."""

MAX_STORED_REPUTATIONS: Final = MAX_REMEMBERED_REPUTATIONS
"""Rows kept. As many as the peer table remembers apart from its records,
so everything loaded at start fits; beyond it, clean records are pruned
first and proven misbehaviour (corrupt blocks, lost replicas) last."""

_MAX_COUNT: Final = 2**63 - 1  # SQLite INTEGER range


class ReputationStore(BatchedPeerTable[Counts]):
    """Reads and writes `peer_reputation` (the batching is `BatchedPeerTable`'s)."""

    component = COMPONENT
    migrations = MIGRATIONS
    table = "peer_reputation"
    columns = ("peer_id", *Counts._fields)
    load_order = "updated"
    prune_order = "(corrupt + proven_losses > 0), updated"  # clean records first, then the least recently written
    what = "peer reputation"
    log = log

    def max_rows(self) -> int:
        return MAX_STORED_REPUTATIONS

    def encode_row(self, peer: PeerId, value: Counts) -> tuple[object, ...]:
        return (str(peer), *(min(max(int(v), 0), _MAX_COUNT) for v in value))

    def decode_row(self, row: tuple[object, ...]) -> tuple[PeerId, Counts] | None:
        text, *values = row
        if not isinstance(text, str) or len(values) != len(Counts._fields):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        try:
            peer = PeerId.from_string(text)
        except P2PError:
            return None
        return peer, Counts(*(int(v) for v in values if isinstance(v, int)))

    def pending(self, reputations: Iterable[tuple[PeerId, Reputation]]) -> dict[PeerId, Counts]:
        """Counters that differ from what was last written or loaded. No I/O.

        A peer never written counts as blank, so a clean record costs no row.
        """
        out: dict[PeerId, Counts] = {}
        blank = Counts()
        for peer, rep in reputations:
            counts = rep.counts()
            if self.changed(peer, counts, blank):
                out[peer] = counts
        return out
