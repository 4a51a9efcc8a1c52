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
score (unlike a pin or an agreement, which are written at once).

Plain synchronous sqlite3 through `shoal.store.persist.index.Index`; no trio here.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Callable, Final, Iterable, Mapping

from shoal.store.errors import StoreError
from shoal.store.persist.index import Index, register_schema

from shoal.p2p.errors import P2PError
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
_COLUMNS: Final = "peer_id, delivered, corrupt, timeouts, proven_losses, audit_timeouts"


class ReputationStore:
    """Reads and writes `peer_reputation`; remembers what it last wrote.

    Not thread-safe by itself: the caller runs at most one `write` at a
    time and does not call `pending` while one runs (the node holds a lock).
    """

    def __init__(self, index: Index, *, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self._clock = clock
        self._written: dict[PeerId, Counts] = {}
        self._schema_ok = False
        self.writes = 0  # transactions committed by `write`
        self.skipped_rows = 0  # unreadable rows ignored by the last `load`

    def _ensure_schema(self) -> bool:
        """Create the table if this module was imported after the index was opened."""
        if not self._schema_ok:
            try:
                self.index.apply_schema(COMPONENT, MIGRATIONS)
            except (StoreError, sqlite3.Error) as exc:
                log.warning("peer reputation is not persisted: %s", exc)
                return False
            self._schema_ok = True
        return True

    def load(self) -> dict[PeerId, Counts]:
        """Every readable row. A damaged row is skipped, an unreadable table gives {}."""
        self.skipped_rows = 0
        if not self._ensure_schema():
            return {}
        try:
            with self.index.snapshot() as db:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM peer_reputation ORDER BY updated LIMIT ?",
                    (MAX_STORED_REPUTATIONS,),
                ).fetchall()
        except sqlite3.Error as exc:
            log.warning("cannot read saved peer reputation, starting without it: %s", exc)
            return {}
        out: dict[PeerId, Counts] = {}
        for row in rows:
            parsed = _parse_row(row)
            if parsed is None:
                self.skipped_rows += 1
                continue
            peer, counts = parsed
            out[peer] = counts
        if self.skipped_rows:
            log.warning("ignored %d damaged peer reputation rows", self.skipped_rows)
        self._written.update(out)
        return out

    def pending(self, reputations: Iterable[tuple[PeerId, Reputation]]) -> dict[PeerId, Counts]:
        """Counters that differ from what was last written or loaded. No I/O."""
        out: dict[PeerId, Counts] = {}
        blank = Counts()
        for peer, rep in reputations:
            counts = rep.counts()
            if self._written.get(peer, blank) != counts:
                out[peer] = counts
        return out

    def write(self, changes: Mapping[PeerId, Counts]) -> int:
        """Upsert all `changes` in one transaction; returns the rows written.

        On an exception nothing is recorded as written, so the next call
        retries the same rows.
        """
        if not changes or not self._ensure_schema():
            return 0
        now = self._clock()
        rows = [(str(peer), *(min(max(int(v), 0), _MAX_COUNT) for v in counts), now)
                for peer, counts in changes.items()]
        with self.index.transaction() as db:
            db.executemany(
                f"INSERT INTO peer_reputation ({_COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (peer_id) DO UPDATE SET delivered = excluded.delivered, "
                "corrupt = excluded.corrupt, timeouts = excluded.timeouts, "
                "proven_losses = excluded.proven_losses, audit_timeouts = excluded.audit_timeouts, "
                "updated = excluded.updated",
                rows,
            )
            pruned = _prune(db, MAX_STORED_REPUTATIONS)
        self.writes += 1
        self._written.update(changes)
        for text in pruned:
            try:
                self._written.pop(PeerId.from_string(text), None)
            except P2PError:
                continue
        return len(rows)


def _parse_row(row: tuple[object, ...]) -> tuple[PeerId, Counts] | None:
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


def _prune(db: sqlite3.Connection, keep: int) -> list[str]:
    """Drop rows beyond `keep`: clean records first, then the least recently written."""
    (count,) = db.execute("SELECT COUNT(*) FROM peer_reputation").fetchone()
    if count <= keep:
        return []
    victims = [r[0] for r in db.execute(
        "SELECT peer_id FROM peer_reputation ORDER BY (corrupt + proven_losses > 0), updated LIMIT ?",
        (count - keep,),
    )]
    db.executemany("DELETE FROM peer_reputation WHERE peer_id = ?", [(v,) for v in victims])
    return victims
