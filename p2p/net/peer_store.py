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

Batched like reputation (shoal.p2p.net.reputation_store): the node calls
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
import sqlite3
import time
from typing import Callable, Final, Iterable, Mapping

from shoal.store.errors import StoreError
from shoal.store.persist.index import Index, register_schema

from shoal.p2p.errors import P2PError
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

_COLUMNS: Final = "peer_id, addrs, last_seen, last_connected, dial_failures, failing_since, next_dial_at"

# Pruning order (first to go), see the module docstring.
_PRUNE_ORDER: Final = ("(last_connected > 0), (dial_failures = 0), "
                       "CASE WHEN dial_failures > 0 THEN failing_since ELSE 0 END, "
                       "last_connected, last_seen, updated")
_LOAD_ORDER: Final = ("(last_connected > 0) DESC, (dial_failures = 0) DESC, "
                      "CASE WHEN dial_failures > 0 THEN failing_since ELSE 0 END DESC, "
                      "last_connected DESC, last_seen DESC, updated DESC")


class PeerStore:
    """Reads and writes `peer_table`; remembers what it last wrote.

    Not thread-safe by itself: the caller runs at most one `write` at a
    time and does not call `pending` while one runs (the node holds a lock).
    """

    def __init__(self, index: Index, *, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self._clock = clock
        self._written: dict[PeerId, PeerState] = {}
        self._damaged: set[str] = set()  # peer_id texts of damaged rows, deleted at the next write
        self._schema_ok = False
        self.writes = 0  # transactions committed by `write`
        self.skipped_rows = 0  # damaged rows ignored by the last `load`

    def _ensure_schema(self) -> bool:
        """Create the table if this module was imported after the index was opened."""
        if not self._schema_ok:
            try:
                self.index.apply_schema(COMPONENT, MIGRATIONS)
            except (StoreError, sqlite3.Error) as exc:
                log.warning("the peer table is not persisted: %s", exc)
                return False
            self._schema_ok = True
        return True

    def load(self) -> dict[PeerId, PeerState]:
        """Every readable row, the most valuable first (the reverse of the pruning order).

        A damaged row is skipped (and deleted at the next write); an
        unreadable table gives {}.
        """
        self.skipped_rows = 0
        if not self._ensure_schema():
            return {}
        try:
            with self.index.snapshot() as db:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM peer_table ORDER BY {_LOAD_ORDER} LIMIT ?", (MAX_STORED_PEERS,),
                ).fetchall()
        except sqlite3.Error as exc:
            log.warning("cannot read the saved peer table, starting without it: %s", exc)
            return {}
        out: dict[PeerId, PeerState] = {}
        for row in rows:
            parsed = _parse_row(row)
            if parsed is None:
                self.skipped_rows += 1
                if isinstance(row[0], str):
                    self._damaged.add(row[0])
                continue
            peer, state = parsed
            out[peer] = state
        if self.skipped_rows:
            log.warning("ignored %d damaged rows of the saved peer table", self.skipped_rows)
        self._written.update(out)
        return out

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
            if self._written.get(rec.peer_id) != state:
                out[rec.peer_id] = state
        return out

    @property
    def has_damaged_rows(self) -> bool:
        return bool(self._damaged)

    def write(self, changes: Mapping[PeerId, PeerState]) -> int:
        """Upsert all `changes` in one transaction (and drop damaged rows); returns the rows written.

        On an exception nothing is recorded as written, so the next call
        retries the same rows.
        """
        if (not changes and not self._damaged) or not self._ensure_schema():
            return 0
        now = self._clock()
        rows = [_row(peer, state, now) for peer, state in changes.items()]
        damaged = sorted(self._damaged)
        with self.index.transaction() as db:
            db.executemany("DELETE FROM peer_table WHERE peer_id = ?", [(d,) for d in damaged])
            db.executemany(
                f"INSERT INTO peer_table ({_COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (peer_id) DO UPDATE SET addrs = excluded.addrs, last_seen = excluded.last_seen, "
                "last_connected = excluded.last_connected, dial_failures = excluded.dial_failures, "
                "failing_since = excluded.failing_since, next_dial_at = excluded.next_dial_at, "
                "updated = excluded.updated",
                rows,
            )
            pruned = _prune(db, MAX_STORED_PEERS)
        self.writes += 1
        self._damaged.difference_update(damaged)
        self._written.update(changes)
        for text in pruned:
            try:
                self._written.pop(PeerId.from_string(text), None)
            except P2PError:
                continue
        return len(rows)


def _finite(value: float) -> float:
    return value if math.isfinite(value) and value >= 0 else 0.0


def _row(peer: PeerId, state: PeerState, now: float) -> tuple[object, ...]:
    addrs = json.dumps([str(a.with_peer(None)) for a in state.addrs[:MAX_ADDRS_PER_PEER]])
    return (str(peer), addrs, _finite(state.last_seen), _finite(state.last_connected),
            min(max(int(state.dial_failures), 0), MAX_DIAL_FAILURES), _finite(state.failing_since),
            _finite(state.next_dial_at), now)


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


def _prune(db: sqlite3.Connection, keep: int) -> list[str]:
    """Drop rows beyond `keep` in the pruning order; returns their peer ids."""
    (count,) = db.execute("SELECT COUNT(*) FROM peer_table").fetchone()
    if count <= keep:
        return []
    victims = [r[0] for r in db.execute(
        f"SELECT peer_id FROM peer_table ORDER BY {_PRUNE_ORDER} LIMIT ?", (count - keep,))]
    db.executemany("DELETE FROM peer_table WHERE peer_id = ?", [(v,) for v in victims])
    return victims
