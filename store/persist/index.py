"""The repo index: one SQLite database (WAL) beside the block files.

It records what the blocks *mean*: which objects were put (`objects`), which
roots are pinned (`pins`), and which blocks each pin protects (`pin_blocks`,
one row per pin and block key). A block's reference count is the number of
its `pin_blocks` rows (the `block_refs` view). Membership rows rather than a
counter column: unpinning then needs no DAG walk (a pinned DAG with a lost
block can still be unpinned), and counts cannot drift from a half-applied
increment, since they are always derived. Cost: ~60 bytes per MiB pinned.

Durability: `journal_mode=WAL` so readers never block the writer, and
`synchronous=FULL`, which fsyncs the WAL on every commit. NORMAL would be
faster but may lose the last commits on power loss; here that would be a pin
the user was told about, whose blocks the next `gc` would then delete.
Commits are few (one per put, pin or gc), so FULL costs little.

Readers never wait for the writer: every read goes through a pooled
connection of its own (`PRAGMA query_only`), and WAL lets it read the last
committed state while a write transaction runs. Only writes share the one
writer connection and its lock. Why: a put of 100k blocks records them in
one transaction that takes over a second; a read that queued behind it on
the shared connection blocked its caller, and when that caller was the
node's event loop, every peer and API request with it. A read made inside
the calling thread's own write transaction uses the writer connection, so
it sees that transaction's rows.

Schema versions: the core tables' version is `PRAGMA user_version`; other
modules (energy ledger, peers, agreements) call `register_schema(component,
migrations)` at import time and their versions live in `schema_components`.
Each migration runs in its own transaction with its version bump.

Not here: any knowledge of blocks on disk or DAG structure (shoal.store.persist.repo).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from shoal.store.errors import IndexCorrupt, IndexMissing, RepoError, StorageFull

log = logging.getLogger("shoal.index")
LOOP_WRITE = "LOOP-WRITE"
"""Marks the log line of an index write made on a node's event-loop thread
(the integration tests fail on it)."""

__all__ = [
    "Index", "ObjectRecord", "PinRecord", "register_schema", "CORE_MIGRATIONS",
]

CORE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE objects (
        cid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('file', 'directory')),
        size INTEGER NOT NULL,
        tsize INTEGER NOT NULL,
        blocks INTEGER NOT NULL,
        profile TEXT NOT NULL,
        chunker TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE pins (
        cid TEXT PRIMARY KEY,
        recursive INTEGER NOT NULL CHECK (recursive IN (0, 1)),
        created REAL NOT NULL
    );
    CREATE TABLE pin_blocks (
        pin TEXT NOT NULL REFERENCES pins(cid) ON DELETE CASCADE,
        key TEXT NOT NULL,
        PRIMARY KEY (pin, key)
    ) WITHOUT ROWID;
    CREATE INDEX pin_blocks_by_key ON pin_blocks(key);
    CREATE VIEW block_refs AS SELECT key, COUNT(*) AS refs FROM pin_blocks GROUP BY key;
    CREATE TABLE schema_components (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    );
    """,
)

_EXTENSIONS: dict[str, tuple[str, ...]] = {}

# Facts about the index itself. `pinned_once`: this index has recorded a pin
# at some point. gc uses it to tell "every pin was removed" (fine: delete
# everything) from "this index never knew these blocks" (a lost index
# recreated, or replaced by a fresh one: deleting would lose every object).
# An index that already holds objects or pins when this table is added
# counts as having pinned.
INDEX_META_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE index_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO index_meta (key, value)
        SELECT 'pinned_once', '1' WHERE EXISTS (SELECT 1 FROM pins) OR EXISTS (SELECT 1 FROM objects);
    """,
)


def register_schema(component: str, migrations: Sequence[str]) -> None:
    """Declare a module's tables: `migrations[i]` takes it from version i to i+1.

    Append new migrations; never edit or reorder shipped ones. Applied when an
    Index is opened. Registering the same component twice must pass the same
    list (or a longer one that extends it).
    """
    if not component or component == "core":
        raise ValueError("component needs a name other than 'core'")
    old = _EXTENSIONS.get(component, ())
    new = tuple(migrations)
    if new[: len(old)] != old:
        raise ValueError(f"schema migrations of {component!r} were changed, not extended")
    _EXTENSIONS[component] = new


@dataclass(frozen=True)
class ObjectRecord:
    """An object put into this repo: a file or directory root and how it was made."""

    cid: str
    name: str
    kind: str  # "file" or "directory"
    size: int
    tsize: int
    blocks: int
    profile: str
    chunker: str
    created: float = 0.0


@dataclass(frozen=True)
class PinRecord:
    cid: str
    recursive: bool
    created: float
    blocks: int  # how many distinct blocks this pin protects


class Index:
    """A thread-safe handle on `index.sqlite`. Every write is one transaction."""

    def __init__(self, path: Path, *, migrate: bool = True, create: bool = True,
                 read_only: bool = False) -> None:
        """Open and, if `migrate`, bring the schema up to date.

        `create=False` (opening an existing repo): a missing, empty or
        schema-less file raises IndexMissing instead of becoming a fresh
        index, since a fresh index's empty pin set would let gc delete every
        block. `migrate=False` is for opening without the repo lock: it must
        not write, so an out-of-date schema is an error there instead.
        `read_only=True` (no lock, implies `migrate=False`): a `mode=ro`
        connection, so reading never needs write access to the repo; where
        even that cannot work (a read-only mount, or a full disk, where
        SQLite cannot create its `-shm` file) and no `-wal` holds changes
        the main file lacks, the file is opened `immutable`, which reads it
        without any locking or side file.
        """
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._writer_thread: int | None = None  # the thread inside transaction(), if any
        # Set by a running node to its event loop's thread: a write from there
        # waits behind any other writer with the whole loop stopped, so it is
        # logged (LOOP_WRITE) as the bug it is. Reads never wait (`_reading`).
        self.loop_thread: int | None = None
        self._readers: list[sqlite3.Connection] = []  # idle read connections
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # held only to take or return a connection
        self._closed = False
        if not create or read_only:
            try:
                empty = self.path.stat().st_size == 0
            except FileNotFoundError:
                raise IndexMissing(f"the repo index {self.path} is missing") from None
            except OSError as exc:
                raise RepoError(f"cannot open index {self.path}: {exc.strerror}") from exc
            if empty:
                raise IndexMissing(f"the repo index {self.path} is empty")
        try:
            if read_only:
                self._db = self._connect_read_only()
            else:
                self._db = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
                )
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise RepoError(f"{self.path}: SQLite refused WAL mode (got {mode})")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
            version = self.schema_version()
            if version == 0 and (not create or read_only):
                raise IndexMissing(f"the repo index {self.path} holds no tables (it was emptied or replaced)")
            if migrate and not read_only:
                self._migrate()
            elif version != len(CORE_MIGRATIONS):
                raise RepoError(f"{self.path} needs a schema upgrade; open the repo with its lock once")
        except sqlite3.Error as exc:
            self._close_quietly()
            raise sqlite_error(exc, self.path, f"cannot open index {self.path}") from exc
        except BaseException:
            self._close_quietly()
            raise

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=False, timeout=10.0)
        try:
            db.execute("PRAGMA user_version").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            name = getattr(exc, "sqlite_errorname", "")
            if not (name.startswith("SQLITE_IOERR") or name.startswith("SQLITE_CANTOPEN")
                    or name.startswith("SQLITE_READONLY")):
                raise
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise  # committed changes may live only in the WAL: immutable would not see them
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=10.0)

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def close(self) -> None:
        with self._lock:
            with self._readers_lock:
                self._closed = True
                readers, self._all_readers, self._readers = self._all_readers, [], []
            for conn in readers:
                conn.close()
            self._db.close()

    # -- readers ----------------------------------------------------------

    def _open_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with, that never waits for a write in progress.

        Inside this thread's own transaction: the writer connection (to see
        its uncommitted rows); a read-only index has only its one connection,
        and no writer to wait for. Otherwise an idle pooled read connection,
        or a new one; the pool grows to the number of threads reading at once.
        """
        if self.read_only or self._writer_thread == threading.get_ident():
            with self._lock:
                yield self._db
            return
        with self._readers_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = self._open_reader()
            with self._readers_lock:
                self._all_readers.append(conn)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._readers_lock:
                if self._closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    # -- transactions and schema ----------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` … COMMIT, or ROLLBACK on any exception.

        A full disk (SQLITE_FULL, or an I/O error while the disk is full)
        becomes StorageFull, so the user reads "disk full", not "disk I/O error".
        """
        if self.loop_thread is not None and threading.get_ident() == self.loop_thread:
            log.error("%s: index write on the event loop's thread (it blocks every peer while it "
                      "waits for another writer); run it in a worker thread", LOOP_WRITE, stack_info=True)
        with self._lock:
            outer = self._writer_thread
            self._writer_thread = threading.get_ident()  # its reads see its own rows (`_reading`)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                mapped = sqlite_error(exc, self.path, f"cannot update index {self.path}")
                if isinstance(mapped, (StorageFull, IndexCorrupt)):
                    raise mapped from exc
                raise
            finally:
                self._writer_thread = outer

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one consistent state.

        It runs on a read connection (see `_reading`), so it neither waits
        for a write in progress nor may it write.
        """
        with self._reading() as db:
            if db is self._db:  # inside our own write transaction: already consistent
                yield db
                return
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")

    def _run_migration(self, script: str, bump: str, params: tuple[object, ...]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _split_sql(script):
                self._db.execute(statement)
            self._db.execute(bump, params)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        with self._lock:
            core = self.schema_version()
            if core > len(CORE_MIGRATIONS):
                raise RepoError(f"{self.path} was written by a newer Shoal (schema {core})")
            for version in range(core, len(CORE_MIGRATIONS)):
                # PRAGMA takes no parameters; the value is our own int.
                self._run_migration(CORE_MIGRATIONS[version], f"PRAGMA user_version = {version + 1}", ())
            for component, migrations in sorted(_EXTENSIONS.items()):
                self.apply_schema(component, migrations)

    def apply_schema(self, component: str, migrations: Sequence[str]) -> None:
        """Bring one component's tables up to date (also done for registered ones on open)."""
        with self._lock:
            current = self.component_version(component)
            if current > len(migrations):
                raise RepoError(f"{self.path}: {component} schema {current} is newer than this Shoal")
            for version in range(current, len(migrations)):
                try:
                    self._run_migration(
                        migrations[version],
                        "INSERT OR REPLACE INTO schema_components (component, version) VALUES (?, ?)",
                        (component, version + 1),
                    )
                except sqlite3.Error as exc:
                    raise RepoError(f"{component} schema migration {version + 1} failed: {exc}") from exc

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def component_version(self, component: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT version FROM schema_components WHERE component = ?", (component,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- objects and pins --------------------------------------------------

    def record_put(self, obj: ObjectRecord, keys: Iterable[str]) -> None:
        """In one transaction: the object row and its recursive pin over `keys`."""
        with self.transaction() as db:
            _upsert_object(db, obj)
            _upsert_pin(db, obj.cid, True, keys)

    def add_pin(self, cid: str, recursive: bool, keys: Iterable[str]) -> None:
        """Pin `cid`, protecting exactly `keys` (replaces an existing pin of `cid`)."""
        with self.transaction() as db:
            _upsert_pin(db, cid, recursive, keys)

    def remove_pin(self, cid: str, created: float | None = None) -> bool:
        """Unpin; False if `cid` was not pinned. Its blocks go at the next gc.

        With `created`, only the pin made at that moment goes: a pin made
        again since (it gets a fresh `created`) stays, checked and deleted in
        one statement, so nobody can re-pin in between.
        """
        with self.transaction() as db:
            if created is None:
                cur = db.execute("DELETE FROM pins WHERE cid = ?", (cid,))
            else:
                cur = db.execute("DELETE FROM pins WHERE cid = ? AND created = ?", (cid, created))
            return cur.rowcount > 0

    def has_pins(self) -> bool:
        with self._reading() as db:
            return db.execute("SELECT 1 FROM pins LIMIT 1").fetchone() is not None

    def is_pinned(self, cid: str) -> bool:
        with self._reading() as db:
            return db.execute("SELECT 1 FROM pins WHERE cid = ?", (cid,)).fetchone() is not None

    def pins(self) -> list[PinRecord]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT p.cid, p.recursive, p.created, COUNT(b.key) FROM pins p "
                "LEFT JOIN pin_blocks b ON b.pin = p.cid GROUP BY p.cid ORDER BY p.created, p.cid"
            ).fetchall()
        return [PinRecord(c, bool(r), t, n) for c, r, t, n in rows]

    def pin_keys(self, cid: str) -> list[str]:
        with self._reading() as db:
            rows = db.execute("SELECT key FROM pin_blocks WHERE pin = ?", (cid,)).fetchall()
        return [r[0] for r in rows]

    def refcount(self, key: str) -> int:
        """How many pins protect the block with this key."""
        with self._reading() as db:
            row = db.execute("SELECT COUNT(*) FROM pin_blocks WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def live_keys(self) -> set[str]:
        """Every block key some pin protects: what gc must keep."""
        with self._reading() as db:
            return {r[0] for r in db.execute("SELECT DISTINCT key FROM pin_blocks")}

    def objects(self) -> list[ObjectRecord]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT cid, name, kind, size, tsize, blocks, profile, chunker, created "
                "FROM objects ORDER BY created, cid"
            ).fetchall()
        return [ObjectRecord(*row) for row in rows]

    def ever_pinned(self) -> bool:
        """True once this index has recorded a pin (see INDEX_META_MIGRATIONS)."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM index_meta WHERE key = 'pinned_once'").fetchone()
        return row is not None

    def forget_objects(self, cids: Iterable[str]) -> int:
        """Drop object rows (gc does this for roots whose block is gone)."""
        with self.transaction() as db:
            cur = db.executemany("DELETE FROM objects WHERE cid = ?", [(c,) for c in cids])
            return cur.rowcount


def _upsert_object(db: sqlite3.Connection, obj: ObjectRecord) -> None:
    created = obj.created or time.time()
    db.execute(
        "INSERT INTO objects (cid, name, kind, size, tsize, blocks, profile, chunker, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cid) DO UPDATE SET name = excluded.name",
        (obj.cid, obj.name, obj.kind, obj.size, obj.tsize, obj.blocks, obj.profile, obj.chunker, created),
    )


def _upsert_pin(db: sqlite3.Connection, cid: str, recursive: bool, keys: Iterable[str]) -> None:
    db.execute("DELETE FROM pins WHERE cid = ?", (cid,))  # cascades to pin_blocks
    db.execute("INSERT OR IGNORE INTO index_meta (key, value) VALUES ('pinned_once', '1')")
    db.execute("INSERT INTO pins (cid, recursive, created) VALUES (?, ?, ?)", (cid, int(recursive), time.time()))
    db.executemany(
        "INSERT OR IGNORE INTO pin_blocks (pin, key) VALUES (?, ?)", ((cid, k) for k in keys)
    )


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.execute runs one at a time).

    Cut at each `;` that ends a complete statement, so semicolons inside
    strings and trigger bodies stay where they are.
    """
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \t\r\n;"):
        raise RepoError(f"incomplete SQL in migration: {current.strip()[:80]!r}")
    return statements


register_schema("index_meta", INDEX_META_MIGRATIONS)


_FULL_FREE_BYTES = 1 << 20  # below this much free space an SQLite I/O error is taken as a full disk


def sqlite_error(exc: sqlite3.Error, path: Path, what: str) -> RepoError | StorageFull:
    """The store error for an SQLite failure on `path`: StorageFull for a full
    disk (SQLITE_FULL, or an I/O error such as SQLITE_IOERR_SHMSIZE while the
    filesystem has next to no room), IndexCorrupt for a damaged file."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and _nearly_full(path)):
        return StorageFull(f"{what}: disk full")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or name.startswith("SQLITE_CORRUPT"):
        return IndexCorrupt(f"{what}: {exc}")
    return RepoError(f"{what}: {exc}")


def _nearly_full(path: Path) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_FREE_BYTES
