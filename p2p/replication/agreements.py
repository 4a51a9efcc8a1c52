"""Storage agreements, replica states and audit history, kept in the repo index.

Why in `index.sqlite`: an agreement is a promise that must survive restarts
and crashes exactly like a pin does, and the index already gives WAL,
FULL sync and one transaction per change. Tables (component "replication",
registered with `shoal.store.persist.index.register_schema`):

- `repl_objects`: objects this node owns (role "owner"), holds for someone
  (role "holder"), or looks after as deputy of a gone owner (role
  "deputy"); the signed manifest, the wanted replica count, the last offer.
- `repl_holders`: the owner's (or deputy's) view of each holder: policy
  state, timeouts in a row, last audit.
- `repl_agreements`: both signatures of each agreement (offer signed by the
  requester, agreement signed by the holder), as evidence.
- `repl_audits`: audit history (who, when, ok, why), bounded.
- `repl_nonces`: nonces a holder has answered, so replays are refused.
- `repl_releases` (migration 2): the owner's releases of replicas it no
  longer wants, one row per holder, `pending` until the holder answered.
  Migration 2 also adds `released` (when the agreement ended) and
  `pin_taken` (the pin's creation time if the holder took the pin for the
  agreement, NULL if its user had pinned the object already) to
  `repl_objects`, and `released` / `release_sig` to `repl_agreements`.

Not here: the signed byte formats the tables keep (offers, agreement and
release signing bytes): shoal.p2p.replication.signed.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Sequence

from shoal.store.persist.index import Index, register_schema

from shoal.p2p.replication.repair_policy import Replica, State

__all__ = [
    "COMPONENT", "MIGRATIONS", "EcRow", "EcShardRow",
    "ObjectRow", "HolderRow", "AuditRow", "ReleaseRow", "Agreements", "RELEASE_PENDING", "RELEASE_DONE",
    "RELEASE_REFUSED",
]


COMPONENT = "replication"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE repl_objects (
        cid TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('owner', 'holder', 'deputy')),
        manifest BLOB NOT NULL,
        owner TEXT NOT NULL,
        replicas_wanted INTEGER NOT NULL,
        size INTEGER NOT NULL,
        offer BLOB,
        created REAL NOT NULL
    );
    CREATE TABLE repl_holders (
        cid TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'ok', 'failed', 'lost')),
        timeouts_in_a_row INTEGER NOT NULL DEFAULT 0,
        proven_loss INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        since REAL NOT NULL,
        last_audit_time REAL,
        last_audit_ok INTEGER,
        detail TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (cid, peer_id)
    ) WITHOUT ROWID;
    CREATE TABLE repl_agreements (
        cid TEXT NOT NULL,
        requester TEXT NOT NULL,
        holder TEXT NOT NULL,
        offer BLOB NOT NULL,
        requester_sig BLOB NOT NULL,
        holder_sig BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (cid, requester, holder)
    ) WITHOUT ROWID;
    CREATE TABLE repl_audits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cid TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        time REAL NOT NULL,
        ok INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        challenged INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX repl_audits_by_cid ON repl_audits(cid, peer_id, id);
    CREATE TABLE repl_nonces (
        nonce BLOB PRIMARY KEY,
        cid TEXT NOT NULL,
        time REAL NOT NULL
    );
    """,
    # 2: releases. Columns are added (not a table rebuild) so that existing
    # agreements keep their rows untouched. Objects a node already held for
    # others before this version are assumed to be pinned for the agreement
    # (there was no other reason recorded), so a release can free them.
    """
    ALTER TABLE repl_objects ADD COLUMN released REAL;
    ALTER TABLE repl_objects ADD COLUMN pin_taken REAL;
    ALTER TABLE repl_agreements ADD COLUMN released REAL;
    ALTER TABLE repl_agreements ADD COLUMN release_sig BLOB;
    CREATE TABLE repl_releases (
        cid TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'refused')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL,
        since REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (cid, peer_id)
    ) WITHOUT ROWID;
    CREATE INDEX repl_releases_due ON repl_releases(state, next_try);
    UPDATE repl_objects SET pin_taken = (SELECT created FROM pins WHERE pins.cid = repl_objects.cid)
        WHERE role IN ('holder', 'deputy');
    """,
    # 3: audits answered only "busy" count toward a proven loss, and a lost
    # replica needs several passes in a row to be re-admitted.
    """
    ALTER TABLE repl_holders ADD COLUMN busy_in_a_row INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE repl_holders ADD COLUMN passes_in_a_row INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: erasure-coded objects (shoal.p2p.replication.erasure). The owner's
    # objects and their shards (each shard is also an ordinary repl_objects
    # row, role owner, so it is offered, agreed and audited as a replica), and
    # the newest signed shard map a holder was pushed, for readers.
    """
    CREATE TABLE repl_ec (
        cid TEXT PRIMARY KEY,
        k INTEGER NOT NULL,
        m INTEGER NOT NULL,
        threshold INTEGER NOT NULL,
        drop_local INTEGER NOT NULL DEFAULT 0,
        layout_id BLOB,
        map BLOB,
        created REAL NOT NULL
    );
    CREATE TABLE repl_ec_shards (
        cid TEXT NOT NULL,
        idx INTEGER NOT NULL,
        shard_cid TEXT NOT NULL,
        length INTEGER NOT NULL,
        PRIMARY KEY (cid, idx)
    ) WITHOUT ROWID;
    CREATE INDEX repl_ec_shards_by_shard ON repl_ec_shards(shard_cid);
    CREATE TABLE repl_ec_maps (
        cid TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        issued INTEGER NOT NULL,
        map BLOB NOT NULL,
        received REAL NOT NULL
    );
    """,
    # 5: the shard offers an owner pushes with its map (what a deputy re-sends).
    """
    ALTER TABLE repl_ec_maps ADD COLUMN offers BLOB;
    ALTER TABLE repl_ec ADD COLUMN deputy_for TEXT;
    """,
)
register_schema(COMPONENT, MIGRATIONS)

MAX_AUDIT_ROWS = 100_000  # history kept per node; older rows are pruned
MAX_NONCE_ROWS = 200_000  # replay window: far more audits than any deadline spans
MAX_OFFER_HOLDERS = 64

RELEASE_PENDING = "pending"
RELEASE_DONE = "done"
RELEASE_REFUSED = "refused"  # answered, but not released (an old holder, or it does not know us as owner)
_RELEASE_SHOWN = {RELEASE_PENDING: "releasing", RELEASE_DONE: "released", RELEASE_REFUSED: "release_refused"}


# ------------------------------------------------------------------ rows


@dataclass(frozen=True)
class ObjectRow:
    cid: str
    role: str
    manifest: bytes
    owner: str
    replicas_wanted: int
    size: int
    offer: bytes | None
    created: float
    released: float | None = None  # when the owner gave the replicas back (None: active)
    pin_taken: float | None = None  # holder: creation time of the pin it took for the agreement

    @property
    def is_released(self) -> bool:
        return self.released is not None


@dataclass(frozen=True)
class EcRow:
    """An erasure-coded object this node owns (`repl_ec`)."""

    cid: str
    k: int
    m: int
    threshold: int
    drop_local: bool
    layout_id: bytes | None
    map: bytes | None
    created: float
    deputy_for: str | None = None  # the gone owner we act for (None: our own object)


@dataclass(frozen=True)
class EcShardRow:
    cid: str
    idx: int
    shard_cid: str
    length: int


@dataclass(frozen=True)
class ReleaseRow:
    """The owner's view of giving one holder's replica back."""

    cid: str
    peer_id: str
    state: str  # RELEASE_PENDING until the holder answered, then RELEASE_DONE (or RELEASE_REFUSED)
    attempts: int
    next_try: float
    since: float
    detail: str

    def as_json(self) -> dict[str, object]:
        """Shaped like HolderRow.as_json (same keys), so `status` stays one list."""
        return {"peer_id": self.peer_id, "state": _RELEASE_SHOWN.get(self.state, self.state),
                "last_audit": None, "timeouts_in_a_row": 0, "busy_in_a_row": 0, "proven_loss": False,
                "detail": self.detail,
                "release_attempts": self.attempts}


@dataclass(frozen=True)
class HolderRow:
    cid: str
    peer_id: str
    replica: Replica
    since: float
    last_audit_time: float | None
    last_audit_ok: bool | None
    detail: str

    def as_json(self) -> dict[str, object]:
        last = None
        if self.last_audit_time is not None:
            last = {"time": self.last_audit_time, "ok": bool(self.last_audit_ok)}
        return {"peer_id": self.peer_id, "state": self.replica.state.value, "last_audit": last,
                "timeouts_in_a_row": self.replica.timeouts_in_a_row, "busy_in_a_row": self.replica.busy_in_a_row,
                "proven_loss": self.replica.proven_loss, "detail": self.detail}


@dataclass(frozen=True)
class AuditRow:
    cid: str
    peer_id: str
    time: float
    ok: bool
    outcome: str
    challenged: int
    error: str


def _holder(row: Sequence[object]) -> HolderRow:
    cid, peer, state, t, loss, refused, since, lat, lao, detail, busy, passes = row
    replica = Replica(State(str(state)), int(t), bool(loss), bool(refused),  # type: ignore[call-overload]
                      int(busy), int(passes))  # type: ignore[call-overload]
    return HolderRow(str(cid), str(peer), replica, float(since),  # type: ignore[arg-type]
                     None if lat is None else float(lat),  # type: ignore[arg-type]
                     None if lao is None else bool(lao), str(detail))


_HOLDER_COLS = ("cid, peer_id, state, timeouts_in_a_row, proven_loss, refused, since, "
                "last_audit_time, last_audit_ok, detail, busy_in_a_row, passes_in_a_row")
_OBJECT_COLS = "cid, role, manifest, owner, replicas_wanted, size, offer, created, released, pin_taken"
_RELEASE_COLS = "cid, peer_id, state, attempts, next_try, since, detail"


class Agreements:
    """Synchronous access to the replication tables (call from worker threads
    or directly: every call is one short SQLite transaction)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        index.apply_schema(COMPONENT, MIGRATIONS)  # the repo may have been opened before we registered

    # -- objects -----------------------------------------------------------

    def put_object(self, cid: str, role: str, manifest: bytes, owner: str, replicas_wanted: int,
                   size: int, offer: bytes | None = None) -> None:
        with self.index.transaction() as db:
            db.execute(
                "INSERT INTO repl_objects (cid, role, manifest, owner, replicas_wanted, size, offer, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cid) DO UPDATE SET role = excluded.role, "
                "manifest = excluded.manifest, owner = excluded.owner, "
                "replicas_wanted = excluded.replicas_wanted, size = excluded.size, "
                "offer = COALESCE(excluded.offer, repl_objects.offer)",
                (cid, role, manifest, owner, replicas_wanted, size, offer, time.time()),
            )

    def set_wanted(self, cid: str, replicas_wanted: int) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET replicas_wanted = ? WHERE cid = ?", (replicas_wanted, cid))

    def set_role(self, cid: str, role: str) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET role = ? WHERE cid = ?", (role, cid))

    def get_object(self, cid: str) -> ObjectRow | None:
        with self.index.snapshot() as db:
            row = db.execute(f"SELECT {_OBJECT_COLS} FROM repl_objects WHERE cid = ?", (cid,)).fetchone()
        return ObjectRow(*row) if row else None

    def objects(self, roles: Sequence[str] = ("owner", "holder", "deputy"),
                released: bool = False) -> list[ObjectRow]:
        """Objects in `roles`; released ones only with `released=True`.

        Every loop (audits, repairs, owner watch) goes through here, so
        leaving released objects out by default is what stops audits and
        repairs of an object the moment its owner gave it back.
        """
        marks = ",".join("?" * len(roles))
        live = "" if released else " AND released IS NULL"
        with self.index.snapshot() as db:
            rows = db.execute(f"SELECT {_OBJECT_COLS} FROM repl_objects WHERE role IN ({marks}){live} "
                              "ORDER BY created, cid", tuple(roles)).fetchall()
        return [ObjectRow(*r) for r in rows]

    def held_bytes(self) -> int:
        """Bytes this node holds for other peers (what --quota limits); a
        released agreement no longer counts, whatever gc has done yet."""
        with self.index.snapshot() as db:
            row = db.execute("SELECT COALESCE(SUM(size), 0) FROM repl_objects "
                             "WHERE role != 'owner' AND released IS NULL").fetchone()
        return int(row[0])

    def pin_created(self, cid: str) -> float | None:
        """When the repo's pin of `cid` was (last) made, None if not pinned.

        Read from the store's `pins` table (read-only): `Repo.pin_add`
        replaces a pin with a fresh `created`, so comparing it with the
        time recorded when the holder pinned tells whether anyone pinned
        the object again since — the holder's user, independently.
        """
        with self.index.snapshot() as db:
            row = db.execute("SELECT created FROM pins WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else float(row[0])

    def unprotected(self, keys: Sequence[str]) -> list[str]:
        """Those of `keys` that no pin protects (read-only, from the store's
        `pin_blocks`): what a refused replica may delete of what it wrote."""
        out = []
        with self.index.snapshot() as db:
            for key in keys:
                if db.execute("SELECT 1 FROM pin_blocks WHERE key = ? LIMIT 1", (key,)).fetchone() is None:
                    out.append(key)
        return out

    def set_pin_taken(self, cid: str, pin_taken: float | None) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET pin_taken = ? WHERE cid = ?", (pin_taken, cid))

    def reopen(self, cid: str) -> None:
        """A released object is wanted again (new offer, or the owner re-put it)."""
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET released = NULL WHERE cid = ?", (cid,))

    # -- erasure-coded objects ---------------------------------------------------

    def put_ec(self, cid: str, k: int, m: int, threshold: int, drop_local: bool,
               deputy_for: str | None = None) -> None:
        """Owner: `cid` is (to be) stored as K + M shards; a new scheme forgets old shards."""
        with self.index.transaction() as db:
            row = db.execute("SELECT k, m FROM repl_ec WHERE cid = ?", (cid,)).fetchone()
            if row is not None and (int(row[0]), int(row[1])) != (k, m):
                db.execute("DELETE FROM repl_ec_shards WHERE cid = ?", (cid,))
                db.execute("UPDATE repl_ec SET layout_id = NULL, map = NULL WHERE cid = ?", (cid,))
            db.execute(
                "INSERT INTO repl_ec (cid, k, m, threshold, drop_local, created, deputy_for) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (cid) DO UPDATE SET k = excluded.k, m = excluded.m, "
                "threshold = excluded.threshold, drop_local = excluded.drop_local, deputy_for = excluded.deputy_for",
                (cid, k, m, threshold, int(drop_local), time.time(), deputy_for))

    def ec_object(self, cid: str) -> EcRow | None:
        with self.index.snapshot() as db:
            row = db.execute("SELECT cid, k, m, threshold, drop_local, layout_id, map, created, deputy_for "
                             "FROM repl_ec WHERE cid = ?", (cid,)).fetchone()
        if row is None:
            return None
        c, k, m, t, d, lid, mp, cr, dep = row
        return EcRow(str(c), int(k), int(m), int(t), bool(d), lid, mp, float(cr), None if dep is None else str(dep))

    def ec_objects(self) -> list[EcRow]:
        with self.index.snapshot() as db:
            rows = db.execute("SELECT cid FROM repl_ec ORDER BY created, cid").fetchall()
        return [r for r in (self.ec_object(str(c)) for (c,) in rows) if r is not None]

    def set_ec_shards(self, cid: str, layout_id: bytes, shards: Sequence[tuple[int, str, int]]) -> None:
        """Owner: the shards an encoding produced (index, shard CID, length)."""
        with self.index.transaction() as db:
            db.execute("DELETE FROM repl_ec_shards WHERE cid = ?", (cid,))
            db.executemany("INSERT INTO repl_ec_shards (cid, idx, shard_cid, length) VALUES (?, ?, ?, ?)",
                           [(cid, i, s, n) for i, s, n in shards])
            db.execute("UPDATE repl_ec SET layout_id = ? WHERE cid = ?", (layout_id, cid))

    def ec_shards(self, cid: str) -> list[EcShardRow]:
        with self.index.snapshot() as db:
            rows = db.execute("SELECT cid, idx, shard_cid, length FROM repl_ec_shards WHERE cid = ? ORDER BY idx",
                              (cid,)).fetchall()
        return [EcShardRow(str(c), int(i), str(s), int(n)) for c, i, s, n in rows]

    def is_ec_shard(self, shard_cid: str) -> bool:
        with self.index.snapshot() as db:
            row = db.execute("SELECT 1 FROM repl_ec_shards WHERE shard_cid = ? LIMIT 1", (shard_cid,)).fetchone()
        return row is not None

    def set_ec_map(self, cid: str, signed_map: bytes) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_ec SET map = ? WHERE cid = ?", (signed_map, cid))

    def drop_ec(self, cid: str) -> None:
        """Owner: `cid` is no longer stored erasure-coded (pin rm); its shard rows go with it."""
        with self.index.transaction() as db:
            db.execute("DELETE FROM repl_ec_shards WHERE cid = ?", (cid,))
            db.execute("DELETE FROM repl_ec WHERE cid = ?", (cid,))

    def keep_ec_map(self, cid: str, owner: str, issued: int, signed_map: bytes, offers: bytes = b"") -> bool:
        """Holder: keep a pushed map (and its shard offers) unless one at least as new from that owner is kept."""
        with self.index.transaction() as db:
            row = db.execute("SELECT owner, issued FROM repl_ec_maps WHERE cid = ?", (cid,)).fetchone()
            if row is not None and str(row[0]) == owner and int(row[1]) >= issued:
                return False
            db.execute("INSERT OR REPLACE INTO repl_ec_maps (cid, owner, issued, map, received, offers) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (cid, owner, issued, signed_map, time.time(), offers))
        return True

    def ec_maps_kept(self) -> list[tuple[str, bytes, bytes]]:
        """Holder: (object, signed map, shard offers) of every map pushed to us."""
        with self.index.snapshot() as db:
            rows = db.execute("SELECT cid, map, offers FROM repl_ec_maps ORDER BY cid").fetchall()
        return [(str(c), bytes(m), bytes(o or b"")) for c, m, o in rows]

    def forget_object(self, cid: str) -> None:
        """A deputy steps down: drop the rows it made for a shard it never held."""
        with self.index.transaction() as db:
            db.execute("DELETE FROM repl_holders WHERE cid = ?", (cid,))
            db.execute("DELETE FROM repl_objects WHERE cid = ?", (cid,))

    def ec_map(self, cid: str) -> bytes | None:
        """The signed map of `cid` this node knows: its own if it owns it, else the one pushed to it."""
        with self.index.snapshot() as db:
            row = db.execute("SELECT map FROM repl_ec WHERE cid = ? AND map IS NOT NULL", (cid,)).fetchone()
            if row is None:
                row = db.execute("SELECT map FROM repl_ec_maps WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- releases, holder side -------------------------------------------------

    def mark_released(self, cid: str, release_sig: bytes) -> None:
        """Holder: the owner ended the agreement. One transaction: the object
        stops counting (quota, audits, deputy duty), a deputy steps down, and
        the agreements keep the owner's signed release as evidence."""
        now = time.time()
        with self.index.transaction() as db:
            db.execute("UPDATE repl_objects SET released = ?, pin_taken = NULL, "
                       "role = CASE WHEN role = 'deputy' THEN 'holder' ELSE role END "
                       "WHERE cid = ? AND released IS NULL", (now, cid))
            db.execute("UPDATE repl_agreements SET released = ?, release_sig = ? "
                       "WHERE cid = ? AND released IS NULL", (now, release_sig, cid))
            # A deputy's own view of the holders is moot once the owner is back and done.
            db.execute("DELETE FROM repl_holders WHERE cid = ?", (cid,))

    # -- releases, owner side ----------------------------------------------------

    def begin_release(self, cid: str, me: str, peers: Sequence[str], replicas_wanted: int,
                      release_object: bool) -> list[str]:
        """Owner: stop counting `peers` as holders and owe each a release.

        One transaction: each peer's holder row leaves `repl_holders` (so no
        audit, repair count or offer sees it again) and becomes a `pending`
        release; with `release_object` the whole object is marked released
        and wants 0 replicas (our own copy becomes a `done` row). Holders
        that refused the store never took anything and are simply dropped.
        Returns the peers that now need a release message.
        """
        now = time.time()
        owed: list[str] = []
        with self.index.transaction() as db:
            if release_object:
                db.execute("UPDATE repl_objects SET released = ?, replicas_wanted = 0 WHERE cid = ?", (now, cid))
            else:
                db.execute("UPDATE repl_objects SET replicas_wanted = ? WHERE cid = ?", (replicas_wanted, cid))
            for peer in peers:
                row = db.execute("SELECT refused FROM repl_holders WHERE cid = ? AND peer_id = ?",
                                 (cid, peer)).fetchone()
                db.execute("DELETE FROM repl_holders WHERE cid = ? AND peer_id = ?", (cid, peer))
                if peer == me:
                    _upsert_release(db, cid, peer, RELEASE_DONE, now, "the owner's own copy, unpinned")
                elif row is not None and row[0]:
                    continue
                else:
                    _upsert_release(db, cid, peer, RELEASE_PENDING, now, "release not yet answered")
                    owed.append(peer)
        return owed

    def releases(self, cid: str) -> list[ReleaseRow]:
        with self.index.snapshot() as db:
            rows = db.execute(f"SELECT {_RELEASE_COLS} FROM repl_releases WHERE cid = ? ORDER BY since, peer_id",
                              (cid,)).fetchall()
        return [ReleaseRow(*r) for r in rows]

    def release(self, cid: str, peer_id: str) -> ReleaseRow | None:
        with self.index.snapshot() as db:
            row = db.execute(f"SELECT {_RELEASE_COLS} FROM repl_releases WHERE cid = ? AND peer_id = ?",
                             (cid, peer_id)).fetchone()
        return ReleaseRow(*row) if row else None

    def due_releases(self, now: float, limit: int) -> list[ReleaseRow]:
        """Pending releases whose next attempt is due, oldest first (bounded)."""
        with self.index.snapshot() as db:
            rows = db.execute(f"SELECT {_RELEASE_COLS} FROM repl_releases WHERE state = 'pending' "
                              "AND next_try <= ? ORDER BY next_try, cid, peer_id LIMIT ?", (now, limit)).fetchall()
        return [ReleaseRow(*r) for r in rows]

    def owe_release(self, cid: str, peer_id: str) -> None:
        """One more holder to release (it took the replica while the release was decided)."""
        with self.index.transaction() as db:
            db.execute("DELETE FROM repl_holders WHERE cid = ? AND peer_id = ?", (cid, peer_id))
            _upsert_release(db, cid, peer_id, RELEASE_PENDING, time.time(), "release not yet answered")

    def release_done(self, cid: str, peer_id: str, detail: str, state: str = RELEASE_DONE) -> None:
        """The holder answered: `done`, or `refused` if it answered but kept the agreement."""
        with self.index.transaction() as db:
            db.execute("UPDATE repl_releases SET state = ?, detail = ? WHERE cid = ? AND peer_id = ?",
                       (state, detail, cid, peer_id))

    def release_retry(self, cid: str, peer_id: str, next_try: float, detail: str) -> None:
        with self.index.transaction() as db:
            db.execute("UPDATE repl_releases SET attempts = attempts + 1, next_try = ?, detail = ? "
                       "WHERE cid = ? AND peer_id = ? AND state = 'pending'", (next_try, detail, cid, peer_id))

    def forget_done_releases(self, cid: str, peer_id: str | None = None) -> None:
        """Drop finished release rows (the object, or that peer, is wanted again)."""
        with self.index.transaction() as db:
            if peer_id is None:
                db.execute("DELETE FROM repl_releases WHERE cid = ? AND state != 'pending'", (cid,))
            else:
                db.execute("DELETE FROM repl_releases WHERE cid = ? AND peer_id = ? AND state != 'pending'",
                           (cid, peer_id))

    def pending_release_peers(self, cid: str) -> set[str]:
        with self.index.snapshot() as db:
            rows = db.execute("SELECT peer_id FROM repl_releases WHERE cid = ? AND state = 'pending'",
                              (cid,)).fetchall()
        return {str(r[0]) for r in rows}

    # -- holders -------------------------------------------------------------

    def set_holder(self, cid: str, peer_id: str, replica: Replica, detail: str = "") -> None:
        with self.index.transaction() as db:
            db.execute(
                "INSERT INTO repl_holders (cid, peer_id, state, timeouts_in_a_row, proven_loss, refused, since, detail, "
                "busy_in_a_row, passes_in_a_row) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cid, peer_id) DO UPDATE SET "
                "state = excluded.state, timeouts_in_a_row = excluded.timeouts_in_a_row, "
                "proven_loss = excluded.proven_loss, refused = excluded.refused, detail = excluded.detail, "
                "busy_in_a_row = excluded.busy_in_a_row, passes_in_a_row = excluded.passes_in_a_row, "
                "since = CASE WHEN repl_holders.state = excluded.state THEN repl_holders.since ELSE excluded.since END",
                (cid, peer_id, replica.state.value, replica.timeouts_in_a_row, int(replica.proven_loss),
                 int(replica.refused), time.time(), detail, replica.busy_in_a_row, replica.passes_in_a_row),
            )

    def holders(self, cid: str) -> list[HolderRow]:
        with self.index.snapshot() as db:
            rows = db.execute(f"SELECT {_HOLDER_COLS} FROM repl_holders WHERE cid = ? ORDER BY since, peer_id",
                              (cid,)).fetchall()
        return [_holder(r) for r in rows]

    def holder(self, cid: str, peer_id: str) -> HolderRow | None:
        with self.index.snapshot() as db:
            row = db.execute(f"SELECT {_HOLDER_COLS} FROM repl_holders WHERE cid = ? AND peer_id = ?",
                             (cid, peer_id)).fetchone()
        return _holder(row) if row else None

    def holder_peers(self) -> set[str]:
        """Peers that signed for a replica of ours and were never shown to have lost one.

        The node keeps connection slots for them (shoal.p2p.net.admission): they have
        proved useful, and audits and repairs need to reach them.
        """
        with self.index.snapshot() as db:
            rows = db.execute("SELECT DISTINCT peer_id FROM repl_holders WHERE state IN ('ok', 'failed') "
                              "AND proven_loss = 0 AND refused = 0").fetchall()
        return {str(r[0]) for r in rows}

    # -- agreements -------------------------------------------------------------

    def record_agreement(self, cid: str, requester: str, holder: str, offer: bytes,
                         requester_sig: bytes, holder_sig: bytes) -> None:
        with self.index.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO repl_agreements "
                "(cid, requester, holder, offer, requester_sig, holder_sig, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cid, requester, holder, offer, requester_sig, holder_sig, time.time()),
            )

    def agreements(self, cid: str) -> list[dict[str, object]]:
        with self.index.snapshot() as db:
            rows = db.execute("SELECT requester, holder, created, released FROM repl_agreements WHERE cid = ? "
                              "ORDER BY created", (cid,)).fetchall()
        return [{"requester": r, "holder": h, "created": c, "released": rel} for r, h, c, rel in rows]

    # -- audits --------------------------------------------------------------------

    def record_audit(self, cid: str, peer_id: str, outcome: str, challenged: int, error: str,
                     replica: Replica | None) -> None:
        """One audit result and (for the auditor) the replica's new state, atomically."""
        now = time.time()
        ok = outcome == "ok"
        with self.index.transaction() as db:
            db.execute("INSERT INTO repl_audits (cid, peer_id, time, ok, outcome, challenged, error) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (cid, peer_id, now, int(ok), outcome, challenged, error))
            if replica is not None:
                db.execute(
                    "UPDATE repl_holders SET state = ?, timeouts_in_a_row = ?, proven_loss = ?, "
                    "busy_in_a_row = ?, passes_in_a_row = ?, last_audit_time = ?, last_audit_ok = ?, detail = ?, "
                    "since = CASE WHEN state = ? THEN since ELSE ? END WHERE cid = ? AND peer_id = ?",
                    (replica.state.value, replica.timeouts_in_a_row, int(replica.proven_loss),
                     replica.busy_in_a_row, replica.passes_in_a_row, now, int(ok),
                     error, replica.state.value, now, cid, peer_id),
                )
            _prune(db, "repl_audits", "id", MAX_AUDIT_ROWS)

    def audits(self, cid: str | None = None, limit: int = 1000) -> list[AuditRow]:
        sql = "SELECT cid, peer_id, time, ok, outcome, challenged, error FROM repl_audits"
        args: tuple[object, ...] = ()
        if cid is not None:
            sql += " WHERE cid = ?"
            args = (cid,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self.index.snapshot() as db:
            rows = db.execute(sql, args + (limit,)).fetchall()
        return [AuditRow(c, p, t, bool(o), oc, n, e) for c, p, t, o, oc, n, e in rows]

    def passed_audits(self) -> dict[str, int]:
        """Audits each peer has passed for us (vetting new peers in placement)."""
        with self.index.snapshot() as db:
            rows = db.execute("SELECT peer_id, COUNT(*) FROM repl_audits WHERE outcome = 'ok' "
                              "GROUP BY peer_id").fetchall()
        return {str(p): int(n) for p, n in rows}

    def first_audit(self, peer_id: str) -> float | None:
        """When we first audited `peer_id` (the start of what we observed of it)."""
        with self.index.snapshot() as db:
            row = db.execute("SELECT MIN(time) FROM repl_audits WHERE peer_id = ?", (peer_id,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def use_nonce(self, nonce: bytes, cid: str) -> bool:
        """Remember a nonce; False if it was seen before (a replay)."""
        with self.index.transaction() as db:
            try:
                db.execute("INSERT INTO repl_nonces (nonce, cid, time) VALUES (?, ?, ?)", (nonce, cid, time.time()))
            except sqlite3.IntegrityError:
                return False
            _prune(db, "repl_nonces", "time", MAX_NONCE_ROWS)
        return True


def _upsert_release(db: sqlite3.Connection, cid: str, peer: str, state: str, now: float, detail: str) -> None:
    db.execute(
        "INSERT INTO repl_releases (cid, peer_id, state, attempts, next_try, since, detail) "
        "VALUES (?, ?, ?, 0, ?, ?, ?) ON CONFLICT (cid, peer_id) DO UPDATE SET state = excluded.state, "
        "attempts = 0, next_try = excluded.next_try, since = excluded.since, detail = excluded.detail",
        (cid, peer, state, now, now, detail),
    )


def _prune(db: sqlite3.Connection, table: str, order: str, keep: int) -> None:
    # Cheap check first: most commits are far below the cap.
    (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    if count > keep:
        db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY {order} LIMIT ?)",
                   (count - keep,))
