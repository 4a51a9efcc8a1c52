"""The batched persistence shared by the peer table and peer reputation.

Why one class: both keep one row per peer id in a table of the repo index
and are written the same way. The node calls `pending` on the event loop (a
comparison with what was last written or loaded, no I/O; each table decides
what counts as a change) and `write` in a worker thread: every changed row
upserted in ONE transaction, rows beyond the cap pruned in the table's own
order, damaged rows found by `load` deleted. What was last written is
remembered here, so a write that raises records nothing and the next call
retries the same rows, and a pruned peer is written again if it changes.

A subclass names its table, columns (the first is `peer_id`; an `updated`
column is added on write), orders and cap, and turns a value into a row and
a row back into a value (None for a damaged row).

Plain synchronous sqlite3 through `shoal.store.persist.index.Index`; no trio here.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Generic, Mapping, TypeVar

from shoal.store.errors import StoreError
from shoal.store.persist.index import Index

from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import PeerId

__all__ = ["BatchedPeerTable"]

V = TypeVar("V")


class BatchedPeerTable(ABC, Generic[V]):
    """Reads and writes one per-peer table; remembers what it last wrote.

    Not thread-safe by itself: the caller runs at most one `write` at a
    time and does not call `pending` while one runs (the node holds a lock).
    """

    component: ClassVar[str]
    migrations: ClassVar[tuple[str, ...]]
    table: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]  # peer_id first; `updated` is added on write
    load_order: ClassVar[str]  # SQL ORDER BY of `load`: the rows kept when there are too many
    prune_order: ClassVar[str]  # SQL ORDER BY of pruning: the first rows go first
    what: ClassVar[str]  # how log lines name the table
    log: ClassVar[logging.Logger]

    def __init__(self, index: Index, *, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self._clock = clock
        self._written: dict[PeerId, V] = {}
        self._damaged: set[str] = set()  # peer_id texts of damaged rows, deleted at the next write
        self._schema_ok = False
        self.writes = 0  # transactions committed by `write`
        self.skipped_rows = 0  # damaged rows ignored by the last `load`

    # -- what a subclass supplies ---------------------------------------------

    @abstractmethod
    def max_rows(self) -> int:
        """Rows kept (read at every call, so a test can lower the module constant)."""

    @abstractmethod
    def encode_row(self, peer: PeerId, value: V) -> tuple[object, ...]:
        """The values of `columns` for one peer (clamped to what SQLite and `decode_row` accept)."""

    @abstractmethod
    def decode_row(self, row: tuple[object, ...]) -> tuple[PeerId, V] | None:
        """One row of `columns` back into a value; None for a damaged row."""

    # -- the shared logic ------------------------------------------------------

    def _ensure_schema(self) -> bool:
        """Create the table if its module was imported after the index was opened."""
        if not self._schema_ok:
            try:
                self.index.apply_schema(self.component, self.migrations)
            except (StoreError, sqlite3.Error) as exc:
                self.log.warning("%s is not persisted: %s", self.what, exc)
                return False
            self._schema_ok = True
        return True

    def load(self) -> dict[PeerId, V]:
        """Every readable row, in `load_order`, at most `max_rows`.

        A damaged row is skipped (and deleted at the next write); an
        unreadable table gives {}.
        """
        self.skipped_rows = 0
        if not self._ensure_schema():
            return {}
        try:
            with self.index.snapshot() as db:
                rows = db.execute(
                    f"SELECT {', '.join(self.columns)} FROM {self.table} ORDER BY {self.load_order} LIMIT ?",
                    (self.max_rows(),),
                ).fetchall()
        except sqlite3.Error as exc:
            self.log.warning("cannot read the saved %s, starting without it: %s", self.what, exc)
            return {}
        out: dict[PeerId, V] = {}
        for row in rows:
            parsed = self.decode_row(tuple(row))
            if parsed is None:
                self.skipped_rows += 1
                if isinstance(row[0], str):
                    self._damaged.add(row[0])
                continue
            peer, value = parsed
            out[peer] = value
        if self.skipped_rows:
            self.log.warning("ignored %d damaged rows of the saved %s", self.skipped_rows, self.what)
        self._written.update(out)
        return out

    def changed(self, peer: PeerId, value: V, default: V | None = None) -> bool:
        """Whether `value` differs from what was last written or loaded for `peer`."""
        return self._written.get(peer, default) != value

    @property
    def has_damaged_rows(self) -> bool:
        return bool(self._damaged)

    def write(self, changes: Mapping[PeerId, V]) -> int:
        """Upsert all `changes` in one transaction (and drop damaged rows); returns the rows written.

        On an exception nothing is recorded as written, so the next call
        retries the same rows.
        """
        if (not changes and not self._damaged) or not self._ensure_schema():
            return 0
        now = self._clock()
        rows = [(*self.encode_row(peer, value), now) for peer, value in changes.items()]
        damaged = sorted(self._damaged)
        cols = (*self.columns, "updated")
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        with self.index.transaction() as db:
            db.executemany(f"DELETE FROM {self.table} WHERE peer_id = ?", [(d,) for d in damaged])
            db.executemany(
                f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT (peer_id) DO UPDATE SET {updates}",
                rows,
            )
            pruned = self._prune(db, self.max_rows())
        self.writes += 1
        self._damaged.difference_update(damaged)
        self._written.update(changes)
        for text in pruned:
            try:
                self._written.pop(PeerId.from_string(text), None)
            except P2PError:
                continue
        return len(rows)

    def _prune(self, db: sqlite3.Connection, keep: int) -> list[str]:
        """Drop rows beyond `keep` in `prune_order`; returns their peer ids."""
        (count,) = db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()
        if count <= keep:
            return []
        victims = [r[0] for r in db.execute(
            f"SELECT peer_id FROM {self.table} ORDER BY {self.prune_order} LIMIT ?", (count - keep,))]
        db.executemany(f"DELETE FROM {self.table} WHERE peer_id = ?", [(v,) for v in victims])
        return victims
