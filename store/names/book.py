"""The name book: every name record a node knows, in `<repo>/names.sqlite` (WAL).

One row per (publisher, kind, repo, revision), holding that publisher's
newest record (highest seq): `put` keeps a record only if it is new or
newer, so replays of old records, and a second record with the same seq,
change nothing. Records are stored whole (their encoding) beside the
columns queries need, so what `resolve` returns is exactly what was signed.

`resolve(kind, repo, revision, trusted)` matches `revision` against the
revision name or the 40-hex commit, keeps the rows whose publisher the
caller trusts, and returns the one with the highest seq, ties broken by the
smallest publisher text, then revision: deterministic, so every node with
the same records and trust gives the same answer.

The book does not verify signatures nor decide trust: the p2p layer
verifies a record before `put` and passes its trust policy to `resolve`.
A separate file from index.sqlite: name records are metadata gossiped by
peers, nothing gc or the pin accounting depends on, and a book lost or
damaged is rebuilt by the next import or gossip round.

Thread-safe: one connection behind a lock (writes are rare and small).
Opened read-only (a reader beside a running node), a missing book is empty.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

from shoal.store.errors import RepoError
from shoal.store.names.records import NameRecord

__all__ = ["NameBook", "BOOK_FILE"]

BOOK_FILE = "names.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    publisher TEXT NOT NULL,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    revision TEXT NOT NULL,
    seq INTEGER NOT NULL,
    commit_id TEXT NOT NULL,
    cid TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (publisher, kind, repo, revision)
);
CREATE INDEX IF NOT EXISTS records_by_name ON records(kind, repo);
"""


class NameBook:
    """Name records by (publisher, kind, repo, revision), newest seq kept."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            if read_only:
                if self.path.exists():
                    self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                               check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a record lost on power loss could make the next import reuse its seq.
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if self._db is not None:
                self._db.close()
            raise RepoError(f"cannot open the name book {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "NameBook":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        with self._lock:
            if self._db is None:
                return []
            try:
                return list(self._db.execute(sql, params))
            except sqlite3.DatabaseError as exc:
                raise RepoError(f"name book {self.path}: {exc}") from None

    def put(self, record: NameRecord) -> bool:
        """Store `record` if it is new or has a higher seq than the one held for
        its publisher and name; True if stored. Signature checks are the caller's."""
        data = record.encode()
        with self._lock:
            if self._db is None:
                raise RepoError(f"name book {self.path} is open read-only")
            try:
                cur = self._db.execute(
                    "INSERT INTO records (publisher, kind, repo, revision, seq, commit_id, cid, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (publisher, kind, repo, revision) DO UPDATE SET"
                    " seq = excluded.seq, commit_id = excluded.commit_id, cid = excluded.cid,"
                    " data = excluded.data WHERE excluded.seq > records.seq",
                    (record.publisher, record.kind, record.repo, record.revision, record.seq,
                     record.commit, record.cid, data))
            except sqlite3.DatabaseError as exc:
                raise RepoError(f"name book {self.path}: {exc}") from None
            return cur.rowcount > 0

    def latest_seq(self, publisher: str, kind: str, repo: str, revision: str) -> int | None:
        """The seq held for this publisher and name, None if none (the next import uses +1)."""
        with self._lock:
            if self._db is None:
                return None
            row = self._db.execute(
                "SELECT seq FROM records WHERE publisher = ? AND kind = ? AND repo = ? AND revision = ?",
                (publisher, kind, repo, revision)).fetchone()
        return None if row is None else int(row[0])

    def holds(self, publisher: str, kind: str, repo: str, revision: str) -> bool:
        """Whether a record of this publisher for this name is stored."""
        return self.latest_seq(publisher, kind, repo, revision) is not None

    def count_names(self, publisher: str) -> int:
        """How many names (kind, repo, revision) `publisher` has records for here."""
        rows = self._rows("SELECT COUNT(*) FROM records WHERE publisher = ?", (publisher,))
        return int(rows[0][0]) if rows else 0

    def records(self) -> Iterator[NameRecord]:
        """Every stored record (any publisher), in (kind, repo, revision, publisher) order."""
        for (data,) in self._rows("SELECT data FROM records ORDER BY kind, repo, revision, publisher", ()):
            yield NameRecord.decode(data)

    def own_records(self, publisher: str, limit: int) -> list[NameRecord]:
        """At most `limit` records of `publisher`, newest names first (what a node offers peers)."""
        rows = self._rows("SELECT data FROM records WHERE publisher = ? ORDER BY rowid DESC LIMIT ?",
                          (publisher, limit))
        return [NameRecord.decode(data) for (data,) in rows]

    @staticmethod
    def _best(records: list[NameRecord]) -> NameRecord | None:
        if not records:
            return None
        return min(records, key=lambda r: (-r.seq, r.publisher, r.revision))

    def resolve(self, kind: str, repo: str, revision: str,
                trusted: Callable[[str], bool] | None = None) -> NameRecord | None:
        """The record for (kind, repo) whose revision name or commit is `revision`,
        among trusted publishers (None: all); highest seq, then smallest publisher."""
        rows = self._rows("SELECT data FROM records WHERE kind = ? AND repo = ? AND (revision = ? OR commit_id = ?)",
                          (kind, repo, revision, revision.lower()))
        found = [NameRecord.decode(data) for (data,) in rows]
        return self._best([r for r in found if trusted is None or trusted(r.publisher)])

    def repos(self, trusted: Callable[[str], bool] | None = None) -> list[NameRecord]:
        """What `resolve` gives for every (kind, repo, revision) known, sorted by those."""
        groups: dict[tuple[str, str, str], list[NameRecord]] = {}
        for record in self.records():
            if trusted is None or trusted(record.publisher):
                groups.setdefault((record.kind, record.repo, record.revision), []).append(record)
        out = [self._best(group) for _, group in sorted(groups.items())]
        return [r for r in out if r is not None]
