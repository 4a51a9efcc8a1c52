"""The peer table kept in the repo index, so a restarted node knows whom to dial.

Why persisted: a node restarted without `--bootstrap` knew nobody, and
peers it had learnt through peer exchange were gone. What is kept per peer
is `peers.PeerState`: its addresses (at most MAX_ADDRS_PER_PEER, as the
table holds them), when it was last seen and last connected, and the redial
backoff (failures in a row, since when, next dial time), so a peer that was
failing before a restart is not redialled by every restarted node at once.

Table (component "peer_table", registered with `shoal.store.persist.index.register_schema`):
`peer_table`, one row per peer id (base58 text); `addrs` is a JSON list of
multiaddr strings without /p2p/; times are wall-clock seconds (the clock the
peer table's backoff uses).

Batched like reputation, through `shoal.p2p.net.batched_table`: the node calls
`pending` on the event loop (a comparison with what was last written or
loaded, no I/O) and `write` in a worker thread (all changed rows in ONE
transaction) at most every PEER_TABLE_FLUSH_INTERVAL_S and once more at a
clean shutdown. A crash loses at most the last interval's changes: a peer
learnt just before it is learnt again from peer exchange.

Rows are capped at MAX_STORED_PEERS (as many as the table holds). Pruning
order, first to go: peers never connected, those failing longest first;
then peers never connected that are not failing, least recently seen first;
then peers once connected, failing longest first, then least recently
connected. A damaged row (bad peer id, address or number) is logged,
skipped and deleted at the next write; an unreadable table gives an empty
table. Neither stops the node.

Plain synchronous sqlite3 through `shoal.store.persist.index.Index`; no trio here.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Final, Iterable

from shoal.store.persist.index import register_schema

from shoal.p2p.errors import P2PError
from shoal.p2p.net.batched_table import BatchedPeerTable
from shoal.p2p.net.peers import MAX_KNOWN_PEERS, PeerRecord, PeerState
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire.limits import MAX_ADDRS_PER_PEER

__all__ = ["COMPONENT", "MIGRATIONS", "MAX_STORED_PEERS", "PEER_TABLE_FLUSH_INTERVAL_S", "PeerStore"]

log = logging.getLogger("shoal.peer_store")

COMPONENT = "peer_table"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE peer_table (
        peer_id TEXT PRIMARY KEY,
        addrs TEXT NOT NULL,
        last_seen REAL NOT NULL DEFAULT 0,
        last_connected REAL NOT NULL DEFAULT 0,
        dial_failures INTEGER NOT NULL DEFAULT 0,
        failing_since REAL NOT NULL DEFAULT 0,
        next_dial_at REAL NOT NULL DEFAULT 0,
        updated REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)
register_schema(COMPONENT, MIGRATIONS)

PEER_TABLE_FLUSH_INTERVAL_S: Final = 5.0
"""Changed records are written at most this often (plus once at shutdown).
Connections come and go and every one changes a record's times: one small
transaction every few seconds instead of one per change."""

MAX_STORED_PEERS: Final = MAX_KNOWN_PEERS
"""Rows kept: as many as the peer table holds, so everything loaded fits."""

MAX_ADDRS_TEXT: Final = 64 * MAX_ADDRS_PER_PEER
"""Longest `addrs` value read back (a multiaddr string is well under 64
characters); a longer one is a damaged row, not a reason to parse megabytes."""

MAX_DIAL_FAILURES: Final = 1 << 20
"""Failures counted in a row; far past the backoff cap, and keeps the
value in SQLite's integer range whatever the run did."""

_COLUMNS: Final = ("peer_id", "addrs", "last_seen", "last_connected", "dial_failures", "failing_since",
                   "next_dial_at")

# Pruning order (first to go), see the module docstring.
_PRUNE_ORDER: Final = ("(last_connected > 0), (dial_failures = 0), "
                       "CASE WHEN dial_failures > 0 THEN failing_since ELSE 0 END, "
                       "last_connected, last_seen, updated")
_LOAD_ORDER: Final = ("(last_connected > 0) DESC, (dial_failures = 0) DESC, "
                      "CASE WHEN dial_failures > 0 THEN failing_since ELSE 0 END DESC, "
                      "last_connected DESC, last_seen DESC, updated DESC")


class PeerStore(BatchedPeerTable[PeerState]):
    """Reads and writes `peer_table` (the batching is `BatchedPeerTable`'s)."""

    component = COMPONENT
    migrations = MIGRATIONS
    table = "peer_table"
    columns = _COLUMNS
    load_order = _LOAD_ORDER
    prune_order = _PRUNE_ORDER
    what = "peer table"
    log = log

    def max_rows(self) -> int:
        return MAX_STORED_PEERS

    def encode_row(self, peer: PeerId, value: PeerState) -> tuple[object, ...]:
        return _row(peer, value)

    def decode_row(self, row: tuple[object, ...]) -> tuple[PeerId, PeerState] | None:
        return _parse_row(row)

    def pending(self, records: Iterable[PeerRecord]) -> dict[PeerId, PeerState]:
        """Records that differ from what was last written or loaded. No I/O.

        Only peers with an address: one without cannot be dialled, so it is
        not worth a row.
        """
        out: dict[PeerId, PeerState] = {}
        for rec in records:
            if not rec.addrs:
                continue
            state = rec.state()
            if self.changed(rec.peer_id, state):
                out[rec.peer_id] = state
        return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) and value >= 0 else 0.0


def _row(peer: PeerId, state: PeerState) -> tuple[object, ...]:
    addrs = json.dumps([str(a.with_peer(None)) for a in state.addrs[:MAX_ADDRS_PER_PEER]])
    return (str(peer), addrs, _finite(state.last_seen), _finite(state.last_connected),
            min(max(int(state.dial_failures), 0), MAX_DIAL_FAILURES), _finite(state.failing_since),
            _finite(state.next_dial_at))


def _parse_row(row: tuple[object, ...]) -> tuple[PeerId, PeerState] | None:
    text, addrs_text, last_seen, last_connected, failures, failing_since, next_dial_at = row
    if not isinstance(text, str) or not isinstance(addrs_text, str) or len(addrs_text) > MAX_ADDRS_TEXT:
        return None
    times = (last_seen, last_connected, failing_since, next_dial_at)
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
               for t in times):
        return None
    if not isinstance(failures, int) or isinstance(failures, bool) or not 0 <= failures <= MAX_DIAL_FAILURES:
        return None
    try:
        peer = PeerId.from_string(text)
        items = json.loads(addrs_text)
        if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
            return None
        addrs = tuple(dict.fromkeys(Multiaddr.parse(a).with_peer(None) for a in items[:MAX_ADDRS_PER_PEER]))
    except (P2PError, ValueError):  # json.JSONDecodeError is a ValueError
        return None
    if not addrs or any(a.port == 0 for a in addrs):
        return None
    t = [float(v) for v in times if isinstance(v, (int, float))]
    return peer, PeerState(addrs, t[0], t[1], failures, t[2], t[3])

